"""Edits between two texts: histogram line diff, refined by tokens and characters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from rapidfuzz.distance import LCSseq

from streams.scoring.lcs import _lcs_pairs
from streams.scoring.tokens import _utf8_len, tokenize

# Hunks small enough on both sides are re-diffed token by token.
_TOKEN_DIFF_MAX_BYTES = 512
_TOKEN_DIFF_MAX_LINES = 8
# Histogram diff gives up (falls back to a plain LCS) when a line repeats more often.
_HISTOGRAM_MAX_CHAIN = 64


@dataclass(frozen=True, slots=True)
class _Edit:
    """Replace ``old`` at character offset ``start`` of the old text by ``new``."""

    start: int
    old: str
    new: str

    @property
    def end(self) -> int:
        return self.start + len(self.old)


def _split_lines(text: str) -> list[str]:
    """Lines of ``text`` split on ``\\n`` with terminators kept (``\\r\\n`` stays whole)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _histogram_anchor(
    a: Sequence[str], b: Sequence[str], a_lo: int, a_hi: int, b_lo: int, b_hi: int
) -> tuple[int, int, int] | bool | None:
    """Best split region of a[a_lo:a_hi] vs b[b_lo:b_hi] for the histogram diff.

    Returns ``(a_start, a_end, b_start)`` of a common run, ``None`` when the regions share no
    line, or ``True`` to ask for the LCS fallback (some line occurs more than the chain
    limit in ``a``'s region). The anchor is a maximal common run grown around an occurrence
    of the rarest possible line: a run wins when it is longer than the best so far or its
    rarest line is strictly rarer; lines more frequent than the best rarity are not tried.
    """
    occurrences: dict[str, list[int]] = {}
    for i in range(a_lo, a_hi):
        positions = occurrences.get(a[i])
        if positions is None:
            occurrences[a[i]] = [i]
        else:
            positions.append(i)
            if len(positions) > _HISTOGRAM_MAX_CHAIN:
                return True
    best: tuple[int, int, int] | None = None
    best_len = 0
    best_count = _HISTOGRAM_MAX_CHAIN + 1
    j = b_lo
    while j < b_hi:
        positions = occurrences.get(b[j])
        if positions is None or len(positions) > best_count:
            j += 1
            continue
        next_j = j + 1
        covered = -1  # occurrences inside a run just grown would only find the same run
        for i in positions:
            if i <= covered:
                continue
            s_a, s_b = i, j
            while s_a > a_lo and s_b > b_lo and a[s_a - 1] == b[s_b - 1]:
                s_a -= 1
                s_b -= 1
            e_a, e_b = i + 1, j + 1
            while e_a < a_hi and e_b < b_hi and a[e_a] == b[e_b]:
                e_a += 1
                e_b += 1
            rarity = min(len(occurrences[a[k]]) for k in range(s_a, e_a))
            covered = e_a - 1
            next_j = max(next_j, e_b)
            if e_a - s_a > best_len or rarity < best_count:
                best = (s_a, e_a, s_b)
                best_len = e_a - s_a
                best_count = rarity
        j = next_j
    return best


def _histogram_matches(a: Sequence[str], b: Sequence[str]) -> list[tuple[int, int]]:
    """Matched line pairs of a histogram diff (the algorithm of git and imara-diff).

    Each region is trimmed of its common prefix/suffix, split at the anchor found by
    ``_histogram_anchor`` and both sides are processed again; a region sharing nothing is a
    single change, and a region with very frequent lines falls back to ``_lcs_pairs``.
    An explicit stack instead of recursion keeps deep splits off the Python call stack.
    """
    matches: list[tuple[int, int]] = []
    stack = [(0, len(a), 0, len(b))]
    while stack:
        a_lo, a_hi, b_lo, b_hi = stack.pop()
        while a_lo < a_hi and b_lo < b_hi and a[a_lo] == b[b_lo]:
            matches.append((a_lo, b_lo))
            a_lo += 1
            b_lo += 1
        while a_lo < a_hi and b_lo < b_hi and a[a_hi - 1] == b[b_hi - 1]:
            a_hi -= 1
            b_hi -= 1
            matches.append((a_hi, b_hi))
        if a_lo == a_hi or b_lo == b_hi:
            continue
        anchor = _histogram_anchor(a, b, a_lo, a_hi, b_lo, b_hi)
        if anchor is None:
            continue
        if anchor is True:
            pairs = _lcs_pairs(a[a_lo:a_hi], b[b_lo:b_hi])
            matches.extend((a_lo + i, b_lo + j) for i, j in pairs)
            continue
        assert isinstance(anchor, tuple)
        s_a, e_a, s_b = anchor
        e_b = s_b + (e_a - s_a)
        matches.extend((s_a + k, s_b + k) for k in range(e_a - s_a))
        stack.append((a_lo, s_a, b_lo, s_b))
        stack.append((e_a, a_hi, e_b, b_hi))
    matches.sort()
    return matches


def _gaps(pairs: list[tuple[int, int]], n: int, m: int) -> list[tuple[int, int, int, int]]:
    """Unmatched ranges ``(a_lo, a_hi, b_lo, b_hi)`` between consecutive matched pairs."""
    gaps: list[tuple[int, int, int, int]] = []
    pi = pj = 0
    for i, j in [*pairs, (n, m)]:
        if i > pi or j > pj:
            gaps.append((pi, i, pj, j))
        pi, pj = i + 1, j + 1
    return gaps


def _pure_pieces(edit: _Edit) -> list[_Edit]:
    """Split an edit whose character diff is only insertions (or only deletions).

    ``epr`` → ``eprintln!()`` becomes the single insertion ``intln!()`` after ``epr``, so
    extending what the user typed is not mistaken for replacing it. The cheap rapidfuzz LCS
    length decides; only then are the pieces located with ``_lcs_pairs``.
    """
    old, new = edit.old, edit.new
    if not old or not new or len(old) == len(new):
        return [edit]
    shorter = min(len(old), len(new))
    if LCSseq.similarity(old, new) != shorter:
        return [edit]
    pieces: list[_Edit] = []
    for a_lo, a_hi, b_lo, b_hi in _gaps(_lcs_pairs(old, new), len(old), len(new)):
        pieces.append(_Edit(edit.start + a_lo, old[a_lo:a_hi], new[b_lo:b_hi]))
    return pieces


def _token_edits(start: int, old: str, new: str) -> list[_Edit]:
    """Re-diff one small hunk token by token; offsets stay in characters of the old text."""
    old_tokens, new_tokens = tokenize(old), tokenize(new)
    old_offsets = [0, *accumulate(len(t) for t in old_tokens)]
    new_offsets = [0, *accumulate(len(t) for t in new_tokens)]
    edits: list[_Edit] = []
    pairs = _lcs_pairs(old_tokens, new_tokens)
    for a_lo, a_hi, b_lo, b_hi in _gaps(pairs, len(old_tokens), len(new_tokens)):
        o_lo, o_hi = old_offsets[a_lo], old_offsets[a_hi]
        n_lo, n_hi = new_offsets[b_lo], new_offsets[b_hi]
        edits.append(_Edit(start + o_lo, old[o_lo:o_hi], new[n_lo:n_hi]))
    return edits


def _diff_edits(old: str, new: str, old_lines: list[str] | None = None) -> list[_Edit]:
    """Edits turning ``old`` into ``new``, in increasing order of position.

    A histogram line diff gives hunks; a hunk that is as a whole a pure character insertion
    or deletion (one side a subsequence of the other) is split into those pieces at once;
    otherwise a hunk whose sides are both non-empty and each at most 512 UTF-8 bytes and 8
    lines is re-diffed by tokens, and every resulting edit that is a pure character insertion
    or deletion is split into those pieces. ``old_lines`` lets a caller reuse the split of an
    ``old`` text it diffs many times.

    The whole-hunk check comes first because a token diff can pair tokens so that a pure
    extension looks like a replacement: ``a_b_c`` → ``_a__b__c__`` only inserts characters,
    but its token diff deletes an ``a`` (Zed's reference case: 0 of 5 characters reverse).
    """
    if old == new:
        return []
    a = old_lines if old_lines is not None else _split_lines(old)
    b = _split_lines(new)
    offsets = [0, *accumulate(len(line) for line in a)]
    edits: list[_Edit] = []
    for a_lo, a_hi, b_lo, b_hi in _gaps(_histogram_matches(a, b), len(a), len(b)):
        old_text = "".join(a[a_lo:a_hi])
        new_text = "".join(b[b_lo:b_hi])
        start = offsets[a_lo]
        whole = _Edit(start, old_text, new_text)
        pieces = _pure_pieces(whole)
        if pieces != [whole]:
            edits.extend(pieces)
            continue
        if (
            old_text
            and new_text
            and a_hi - a_lo <= _TOKEN_DIFF_MAX_LINES
            and b_hi - b_lo <= _TOKEN_DIFF_MAX_LINES
            and _utf8_len(old_text) <= _TOKEN_DIFF_MAX_BYTES
            and _utf8_len(new_text) <= _TOKEN_DIFF_MAX_BYTES
        ):
            hunk = _token_edits(start, old_text, new_text)
        else:
            hunk = [_Edit(start, old_text, new_text)]
        for edit in hunk:
            edits.extend(_pure_pieces(edit))
    return edits
