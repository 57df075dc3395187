"""Longest common subsequence of token lists: matched pairs and keep-masks."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any


def _common_prefix_len(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the common prefix, by binary search over C-level slice comparisons."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix_len(a: Sequence[Any], b: Sequence[Any], limit: int) -> int:
    """Length of the common suffix, at most ``limit`` (so it cannot overlap a prefix)."""
    la, lb = len(a), len(b)
    lo, hi = 0, limit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[la - mid : la - lo] == b[lb - mid : lb - lo]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _table(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[dict[Hashable, int], list[int]]:
    """The bit-parallel LCS table (Hyyrö): each item's match bits over ``b``, and the rows
    (row ``i``: bit ``j`` is 1 iff L[i][j+1] == L[i][j]), row 0 first."""
    match_bits: dict[Hashable, int] = {}
    for j, item in enumerate(b):
        match_bits[item] = match_bits.get(item, 0) | (1 << j)
    full = (1 << len(b)) - 1
    row = full
    rows = [row]
    get = match_bits.get
    for item in a:
        u = row & get(item, 0)
        if u:
            row = ((row + u) | (row - u)) & full
        rows.append(row)
    return match_bits, rows


def _lcs_pairs(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[tuple[int, int]]:
    """Matched index pairs of one LCS of ``a`` and ``b``, in increasing order.

    The common prefix and suffix are matched directly; the middle uses the classic LCS table,
    backtracked from the end, taking the diagonal on equal items and otherwise stepping left
    (dropping a ``b`` item) when left >= up. The table is held bit-parallel (Hyyrö's
    formulation): row ``i`` is an int whose bit ``j`` is 1 iff L[i][j+1] == L[i][j], so the
    tie test "left >= up" is a bit test and the table costs O(len(a)) big-int ops.
    """
    n, m = len(a), len(b)
    p = _common_prefix_len(a, b)
    s = _common_suffix_len(a, b, min(n, m) - p)
    pairs = [(k, k) for k in range(p)]
    mid_a, mid_b = a[p : n - s], b[p : m - s]
    if mid_a and mid_b:
        match_bits, rows = _table(mid_a, mid_b)
        i, j = len(mid_a), len(mid_b)
        middle: list[tuple[int, int]] = []
        while i > 0 and j > 0:
            # Along row i the backtrack steps left while the items differ and left >= up
            # (bit j-1 set); it stops at a match (diagonal) or a 0 bit (step up). The next
            # stop is therefore the highest set bit below j of (match | ~row): one big-int
            # op per row instead of one per column.
            here = match_bits.get(mid_a[i - 1], 0)
            stops = (here | ~rows[i]) & ((1 << j) - 1)
            if not stops:
                break  # left all the way to column 0
            j = stops.bit_length()
            i -= 1
            if (here >> (j - 1)) & 1:
                j -= 1
                middle.append((p + i, p + j))
        pairs.extend(reversed(middle))
    pairs.extend((n - s + k, m - s + k) for k in range(s))
    return pairs


def _b_mask(a: Sequence[Hashable], b: Sequence[Hashable]) -> list[bool]:
    """``b``'s keep-mask of LCS(a, b): backtrack steps left (drops a b item) when left >= up.

    The same alignment as ``_lcs_pairs`` (same table, same backtrack), written straight into
    the mask: the common prefix and suffix as list slices, only the middle item by item.
    """
    n, m = len(a), len(b)
    p = _common_prefix_len(a, b)
    s = _common_suffix_len(a, b, min(n, m) - p)
    mask = [True] * p + [False] * (m - p - s) + [True] * s
    mid_a, mid_b = a[p : n - s], b[p : m - s]
    if not (mid_a and mid_b):
        return mask
    match_bits, rows = _table(mid_a, mid_b)
    get = match_bits.get
    i, j = len(mid_a), len(mid_b)
    while i > 0 and j > 0:  # see _lcs_pairs for the backtrack
        here = get(mid_a[i - 1], 0)
        stops = (here | ~rows[i]) & ((1 << j) - 1)
        if not stops:
            break
        j = stops.bit_length()
        i -= 1
        if (here >> (j - 1)) & 1:
            j -= 1
            mask[p + j] = True
    return mask


def _keep_masks(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[list[bool], list[bool]]:
    """Both keep-masks of LCS(a, b) as the spec defines them.

    ``a``'s mask comes from a backtrack that steps up (drops an ``a`` item) when up >= left;
    that is the transposed table backtracked with "step left when left >= up", so it is
    ``_b_mask(b, a)``. The two masks may come from different LCS alignments, by design.
    """
    return _b_mask(b, a), _b_mask(a, b)
