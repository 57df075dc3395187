"""Near-duplicate examples: MinHash signatures, LSH candidates, verified groups.

Two examples are near-duplicates when their request-time region *and* settled region are
nearly the same text: the same edit in a fork, a session replayed, a user doing the same
change twice. Each example is a set of character shingles (whitespace runs collapsed, each
shingle tagged with the region it comes from, so both regions must match), hashed by
`datasketch`'s MinHash; its MinHashLSH index proposes candidates, and a candidate joins a
group only when the estimated Jaccard similarity reaches the threshold. Groups are the
connected components of those pairs (so a chain A~B~C is one group).

Deterministic: the permutations come from a fixed seed and scheme, examples are indexed in
request-id order, and a group is named by its smallest request id, so the same examples
always give the same groups.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from datasketch import MinHash, MinHashLSH

SEED = 1  # fixed: a different seed would give different (equally valid) groups
SCHEME = "affine32"  # datasketch >= 2's default, named so an upgrade cannot change it
SHINGLE_CHARS = 5
_SPACE = re.compile(r"\s+")


def shingles(base_region: str, settled_region: str, k: int = SHINGLE_CHARS) -> set[bytes]:
    """Character k-grams of both regions, each tagged `b` (base) or `s` (settled)."""
    out: set[bytes] = set()
    for tag, text in (("b", base_region), ("s", settled_region)):
        flat = _SPACE.sub(" ", text).strip()
        grams = [flat[i:i + k] for i in range(max(1, len(flat) - k + 1))]
        out.update(f"{tag}\x1f{g}".encode() for g in grams)
    return out


def signature(base_region: str, settled_region: str, num_perm: int) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=SEED, scheme=SCHEME)
    m.update_batch(sorted(shingles(base_region, settled_region)))
    return m


class _Groups:
    """Union-find; the representative of a set is its smallest member."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = self.parent.setdefault(x, x)
        while root != self.parent[root]:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def near_duplicate_groups(regions: Mapping[str, tuple[str, str]], threshold: float,
                          num_perm: int = 128) -> dict[str, str]:
    """For every key (a request id) of `regions` (base region, settled region): the name of
    its group, the smallest key in it. A key alone is its own group."""
    groups = _Groups()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sigs: dict[str, MinHash] = {}
    for key in sorted(regions):
        sig = sigs[key] = signature(*regions[key], num_perm=num_perm)
        groups.find(key)
        for other in sorted(lsh.query(sig)):
            if sig.jaccard(sigs[other]) >= threshold:
                groups.union(key, other)
        lsh.insert(key, sig)
    return {key: groups.find(key) for key in regions}
