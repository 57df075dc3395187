"""Deterministic identifiers and seeds: reprocessing the same input yields the same keys."""

from __future__ import annotations

import hashlib


def stable_hash(*parts: object, size: int = 16) -> str:
    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\x1f")  # unit separator: ("ab", "c") and ("a", "bc") hash differently
    return h.hexdigest()


def stable_int(*parts: object) -> int:
    """A 31-bit integer (fits every server's `seed` field)."""
    return int(stable_hash(*parts, size=8), 16) & 0x7FFF_FFFF


def stable_fraction(*parts: object) -> float:
    """A number in [0, 1) that depends only on `parts`."""
    return int(stable_hash(*parts, size=8), 16) / 2**64
