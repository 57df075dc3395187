"""Normalized character Levenshtein distance (rapidfuzz): the band's metric."""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein


def normalized_levenshtein(a: str, b: str) -> float:
    """Character Levenshtein distance divided by the longer length (0.0 for two empties)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    return Levenshtein.distance(a, b) / longest
