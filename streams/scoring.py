"""Edit-prediction scoring: how good is a predicted rewrite of an editable region?

A student model rewrites an editable region (``base``) and we later learn what the user
actually wrote (``settled``). One number is never enough, so every sample gets:

* ``distance`` – normalized character Levenshtein distance to the settled text (rapidfuzz);
* ``kept_rate`` / ``recall_rate`` – how much of the predicted change survives in the settled
  text, and how much of the settled change was predicted (token units, UTF-8 bytes);
* ``reversal_ratio`` – how much of the prediction undoes what the user just did (a prediction
  that reverts the user's own edit is worse than useless, even if it is "close");
* ``delta_chrf`` – chrF computed on the *changes* (character n-gram deltas) rather than on the
  whole texts, so a prediction that changes nothing scores low even though it is close.

All definitions follow the project's scoring spec; where the spec left room, the choice made
is written in the docstring of the function concerned. Only the standard library and
rapidfuzz are used. ``score_samples`` is the pipeline's hot path: it prepares everything that
depends on the base, settled text and history once, then scores each distinct sample.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from rapidfuzz.distance import Indel, LCSseq, Levenshtein

__all__ = [
    "KeptRate",
    "SampleScore",
    "delta_chrf",
    "kept_rate",
    "normalized_levenshtein",
    "reversal_ratio",
    "reversal_ratio_from_history",
    "score_prediction",
    "score_samples",
    "tokenize",
]

# --------------------------------------------------------------------------- tokenizer

# Unicode White_Space minus the two newline characters (which form their own class).
# Spelled out because str.isspace() / re's \s also accept U+001C..U+001F, which are not
# White_Space.
_WS_CLASS = "[\t\x0b\x0c \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"

# Multi-character operators, in the spec's order: regex alternation tries them left to right,
# which is exactly "the first entry of the list that matches".
_OPERATORS = (
    ">>>=", "<<=", ">>=", "...", "..=", "??=", "**=", ">>>", "::", "->", "=>", "==", "!=",
    "<=", ">=", "&&", "||", "<<", ">>", "..", "+=", "-=", "*=", "/=", "%=", "&=", "|=",
    "^=", "++", "--", "**", "??", "?.", ":=", "<-", "//", "/*", "*/",
)  # fmt: skip
_PUNCT = "|".join(re.escape(op) for op in _OPERATORS)

# One match = one comparison unit: a newline run, a whitespace run, a whole identifier run
# (group 1) or one punctuation token. Python's \w is exactly str.isalnum() or "_", i.e.
# "Unicode alphanumeric or underscore".
_UNIT_RE = re.compile(rf"[\r\n]+|{_WS_CLASS}+|(\w+)|{_PUNCT}|.", re.DOTALL)
# The same without the group, so findall returns whole matches (the kept-rate hot path).
_UNIT_FLAT_RE = re.compile(rf"[\r\n]+|{_WS_CLASS}+|\w+|{_PUNCT}|.", re.DOTALL)

# ASCII identifier split points: underscore runs (captured, so they are kept as tokens),
# lower/digit→Upper, and Upper→Upper-followed-by-lower (XMLHttp → XML|Http).
_ASCII_ID_SPLIT = re.compile(r"(_+)|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _split_identifier(word: str) -> list[str]:
    """Split one identifier run into its sub-words (camelCase, ACRONYMWord, ``_`` runs).

    Interpretation: "digit" means ``str.isdigit()`` and case tests use ``str.isupper()`` /
    ``str.islower()``; a case boundary is only considered inside an underscore-free segment.
    """
    if word.isascii():
        if "_" not in word and (len(word) < 2 or word[1:].islower() or word.isdigit()):
            return [word]  # fast path: nothing to split
        return [part for part in _ASCII_ID_SPLIT.split(word) if part]
    tokens: list[str] = []
    start = 0
    i = 0
    n = len(word)
    while i < n:
        c = word[i]
        if c == "_":
            if i > start:
                tokens.append(word[start:i])
            j = i
            while j < n and word[j] == "_":
                j += 1
            tokens.append(word[i:j])
            start = i = j
            continue
        if i > start and c.isupper():
            prev = word[i - 1]
            if (
                prev.islower()
                or prev.isdigit()
                or (prev.isupper() and i + 1 < n and word[i + 1].islower())
            ):
                tokens.append(word[start:i])
                start = i
        i += 1
    if start < n:
        tokens.append(word[start:])
    return tokens


def tokenize(text: str) -> list[str]:
    """Split code into tokens whose concatenation is exactly ``text``.

    Newline runs and whitespace runs are single tokens, identifiers are split into words
    (``getHTTPResponse2Code`` → ``get``, ``HTTP``, ``Response2``, ``Code``; underscore runs
    are their own tokens), punctuation takes the longest listed operator, else one character.
    Note: combining marks are not alphanumeric, so a decomposed ``e`` + U+0301 gives two tokens.
    """
    tokens: list[str] = []
    for m in _UNIT_RE.finditer(text):
        word = m.group(1)
        if word is None:
            tokens.append(m.group())
        else:
            tokens.extend(_split_identifier(word))
    return tokens


def _units(text: str) -> list[str]:
    """Tokens with each run of identifier tokens merged back into one comparison unit.

    Consecutive identifier tokens always come from one identifier run, so the units are just
    the tokenizer's matches before identifiers are split (``new_name`` is one unit).
    """
    return _UNIT_FLAT_RE.findall(text)


def _utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes (cheap for the common ASCII case)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


# --------------------------------------------------------------------------- LCS


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
        match_bits: dict[Hashable, int] = {}
        for j, item in enumerate(mid_b):
            match_bits[item] = match_bits.get(item, 0) | (1 << j)
        full = (1 << len(mid_b)) - 1
        row = full
        rows = [row]
        for item in mid_a:
            u = row & match_bits.get(item, 0)
            if u:
                row = ((row + u) | (row - u)) & full
            rows.append(row)
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
    """``b``'s keep-mask of LCS(a, b): backtrack steps left (drops a b item) when left >= up."""
    mask = [False] * len(b)
    for _, j in _lcs_pairs(a, b):
        mask[j] = True
    return mask


def _keep_masks(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[list[bool], list[bool]]:
    """Both keep-masks of LCS(a, b) as the spec defines them.

    ``a``'s mask comes from a backtrack that steps up (drops an ``a`` item) when up >= left;
    that is the transposed table backtracked with "step left when left >= up", so it is
    ``_b_mask(b, a)``. The two masks may come from different LCS alignments, by design.
    """
    return _b_mask(b, a), _b_mask(a, b)


# --------------------------------------------------------------------------- Levenshtein


def normalized_levenshtein(a: str, b: str) -> float:
    """Character Levenshtein distance divided by the longer length (0.0 for two empties)."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    return Levenshtein.distance(a, b) / longest


# --------------------------------------------------------------------------- kept rate

# Bail out when the prediction's size change differs from the settled one by more than this:
# the two edits are then clearly different and the LCS would only cost time.
_KEPT_RATE_MAX_SIZE_GAP = 512


@dataclass(frozen=True)
class KeptRate:
    """Kept rate and recall rate of a candidate edit against a reference edit (UTF-8 bytes)."""

    kept_rate: float
    recall_rate: float
    candidate_new: int
    candidate_deleted: int
    reference_new: int
    reference_deleted: int
    kept: int
    correctly_deleted: int


_KEPT_ALL = KeptRate(1.0, 1.0, 0, 0, 0, 0, 0, 0)
_KEPT_NONE = KeptRate(0.0, 0.0, 0, 0, 0, 0, 0, 0)


def _ratio(numerator: int, denominator: int, other_denominator: int) -> float:
    """numerator/denominator; a zero denominator gives 1 iff the other side's is zero too."""
    if denominator == 0:
        return 1.0 if other_denominator == 0 else 0.0
    return numerator / denominator


class _KeptRateScorer:
    """Kept rate of many candidates against one (base, reference): reference side cached."""

    def __init__(self, base: str, reference: str) -> None:
        self.base = base
        self.reference = reference
        self._base_bytes = _utf8_len(base)
        self._ref_gap = abs(_utf8_len(reference) - self._base_bytes)
        self._ready = False

    def _prepare(self) -> None:
        # Lazy: a batch where every candidate bails out never tokenizes anything.
        self._base_units = _units(self.base)
        self._base_unit_bytes = [_utf8_len(u) for u in self._base_units]
        ref_units = _units(self.reference)
        ref_keep, base_keep = _keep_masks(ref_units, self._base_units)
        self._ref_new = [u for u, kept in zip(ref_units, ref_keep, strict=True) if not kept]
        self._ref_new_bytes = sum(_utf8_len(u) for u in self._ref_new)
        self._ref_base_keep = base_keep
        self._ref_deleted_bytes = sum(
            n for n, kept in zip(self._base_unit_bytes, base_keep, strict=True) if not kept
        )
        self._ready = True

    def score(self, candidate: str) -> KeptRate:
        if candidate == self.base == self.reference:
            return _KEPT_ALL
        gap = abs(_utf8_len(candidate) - self._base_bytes)
        if abs(gap - self._ref_gap) > _KEPT_RATE_MAX_SIZE_GAP:
            return _KEPT_NONE
        if not self._ready:
            self._prepare()
        cand_units = _units(candidate)
        cand_keep, base_keep = _keep_masks(cand_units, self._base_units)
        cand_new = [u for u, kept in zip(cand_units, cand_keep, strict=True) if not kept]
        cand_new_bytes = [_utf8_len(u) for u in cand_new]
        cand_deleted = sum(
            n for n, kept in zip(self._base_unit_bytes, base_keep, strict=True) if not kept
        )
        kept_mask = _b_mask(self._ref_new, cand_new)  # cand_new's mask in LCS(cand_new, ref_new)
        kept = sum(n for n, k in zip(cand_new_bytes, kept_mask, strict=True) if k)
        correctly_deleted = sum(
            n
            for n, by_cand, by_ref in zip(
                self._base_unit_bytes, base_keep, self._ref_base_keep, strict=True
            )
            if not by_cand and not by_ref
        )
        cand_total = sum(cand_new_bytes) + cand_deleted
        ref_total = self._ref_new_bytes + self._ref_deleted_bytes
        good = kept + correctly_deleted
        return KeptRate(
            kept_rate=_ratio(good, cand_total, ref_total),
            recall_rate=_ratio(good, ref_total, cand_total),
            candidate_new=sum(cand_new_bytes),
            candidate_deleted=cand_deleted,
            reference_new=self._ref_new_bytes,
            reference_deleted=self._ref_deleted_bytes,
            kept=kept,
            correctly_deleted=correctly_deleted,
        )


def kept_rate(base: str, candidate: str, reference: str) -> KeptRate:
    """How much of the candidate's change survives in the reference, and vice versa.

    Units are tokens with identifier runs merged; new units of a side are its units not kept
    by LCS(side, base), deleted units are base units not kept by it. ``kept`` counts candidate
    new units kept by LCS(candidate-new, reference-new); ``correctly_deleted`` counts base
    units both sides dropped. All counts are UTF-8 bytes.

    Interpretation: the two early exits (all three texts equal → rates 1; size changes more
    than 512 bytes apart → rates 0) skip tokenizing, so their byte counts are all 0.
    """
    return _KeptRateScorer(base, reference).score(candidate)


# --------------------------------------------------------------------------- edits & diff

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


# --------------------------------------------------------------------------- reversal


class _ReversalScorer:
    """Reversal ratio of many predictions against one (original → current) history.

    Interpretation: every history edit with new text is an insertion (a replacement is both
    an insertion and a deletion), and a restored deletion is matched against the prediction
    edit's replacement text. The ratio is not clamped: several restored deletions inside
    one prediction edit can in principle push it above 1.
    """

    def __init__(self, original: str, current: str) -> None:
        self.current = current
        self._current_lines = _split_lines(current)
        self._insertions: list[tuple[int, int]] = []  # [start, end) in current
        self._deletions: list[tuple[str, int]] = []  # (deleted text, position in current)
        shift = 0
        for edit in _diff_edits(original, current):
            pos = edit.start + shift
            if edit.new:
                self._insertions.append((pos, pos + len(edit.new)))
            if edit.old:
                self._deletions.append((edit.old, pos))
            shift += len(edit.new) - len(edit.old)

    def score(self, predicted: str) -> float:
        if not self._insertions and not self._deletions:
            return 0.0  # nothing the user did can be undone; skip the diff
        edits = _diff_edits(self.current, predicted, self._current_lines)
        total = sum(len(e.old) + len(e.new) for e in edits)
        if total == 0:
            return 0.0
        reverted = 0
        restored = 0
        for e in edits:
            end = e.end
            for ins_start, ins_end in self._insertions:
                overlap = min(end, ins_end) - max(e.start, ins_start)
                if overlap > 0:
                    reverted += overlap
            if e.new:
                for text, pos in self._deletions:
                    if e.start <= pos < end or pos == e.start:
                        restored += LCSseq.similarity(text, e.new)
        return (reverted + restored) / total


def reversal_ratio(original: str, current: str, predicted: str) -> float:
    """Share of the prediction's edited characters that undo the user's edits.

    ``reversed`` counts predicted-away characters the user had inserted; ``restored`` counts
    (by character LCS) deleted text the prediction puts back at the same place. Divided by
    all old plus new characters of the prediction edits; 0 when the prediction changes
    nothing.
    """
    return _ReversalScorer(original, current).score(predicted)


_HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


@dataclass(frozen=True, slots=True)
class _Hunk:
    """One unified-diff hunk: line lists with terminators, and 1-based header starts."""

    old_start: int
    old_lines: list[str]
    new_start: int
    new_lines: list[str]


def _parse_unified_diff(diff: str) -> list[_Hunk]:
    """Hunks of a unified diff; bodies are read by the header's line counts.

    Counting (rather than trusting the first character alone) keeps a removed line that
    starts with ``--`` from being mistaken for a file header. An empty body line is taken as
    an empty context line, and ``\\ No newline at end of file`` strips the previous line's
    terminator.
    """
    lines = diff.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    hunks: list[_Hunk] = []
    k = 0
    while k < len(lines):
        header = _HUNK_HEADER.match(lines[k])
        k += 1
        if header is None:
            continue
        old_left = int(header.group(2)) if header.group(2) is not None else 1
        new_left = int(header.group(4)) if header.group(4) is not None else 1
        old_lines: list[str] = []
        new_lines: list[str] = []
        last: list[list[str]] = []  # the side lists the previous body line went to
        while k < len(lines) and (old_left > 0 or new_left > 0 or lines[k].startswith("\\")):
            line = lines[k]
            k += 1
            tag, text = line[:1], line[1:] + "\n"
            if tag == "\\":
                for side in last:
                    side[-1] = side[-1][:-1]  # "\ No newline at end of file"
                last = []
            elif tag in (" ", "") and old_left > 0 and new_left > 0:
                old_lines.append(text)
                new_lines.append(text)
                old_left -= 1
                new_left -= 1
                last = [old_lines, new_lines]
            elif tag == "-" and old_left > 0:
                old_lines.append(text)
                old_left -= 1
                last = [old_lines]
            elif tag == "+" and new_left > 0:
                new_lines.append(text)
                new_left -= 1
                last = [new_lines]
            else:
                k -= 1  # malformed body: stop this hunk here
                break
        hunks.append(_Hunk(int(header.group(1)), old_lines, int(header.group(3)), new_lines))
    return hunks


def _reverse_apply(current: str, diff: str) -> str:
    """Undo a unified diff on ``current`` (the text after it) to recover the text before.

    Reversing swaps each hunk's sides: its ``+``/context lines must be found verbatim in
    ``current`` and are replaced by its ``-``/context lines. Hunks are applied in order, each
    searched after the previous one and placed at the exact match nearest to the header's
    line number; a hunk whose lines are not found is skipped.
    """
    lines = _split_lines(current)
    out: list[str] = []
    cursor = 0  # index in `lines` of the first line not yet copied to `out`
    for hunk in _parse_unified_diff(diff):
        find, replace = hunk.new_lines, hunk.old_lines
        width = len(find)
        if width == 0:
            # Pure removal with no context: the header's start is the line it follows.
            at = min(max(hunk.new_start, cursor), len(lines))
        else:
            hint = hunk.new_start - 1
            candidates = [
                k
                for k in range(cursor, len(lines) - width + 1)
                if lines[k] == find[0] and lines[k : k + width] == find
            ]
            if not candidates:
                continue
            at = min(candidates, key=lambda k: (abs(k - hint), k))
        out.extend(lines[cursor:at])
        out.extend(replace)
        cursor = at + width
    out.extend(lines[cursor:])
    return "".join(out)


def _drop_first_component(path: str) -> str | None:
    """``a/b/c`` → ``b/c``; ``None`` when there is only one component."""
    head, sep, rest = path.partition("/")
    return rest if sep and head and rest else None


def _path_matches(entry_path: str, cursor_path: str) -> bool:
    """Whether a history entry is about the cursor's file.

    Interpretation: the spec's "equals it once its first path component is dropped" is
    accepted in both directions (history paths may carry a worktree-root prefix that the
    cursor path lacks, or the other way round).
    """
    if entry_path == cursor_path:
        return True
    return (
        _drop_first_component(entry_path) == cursor_path
        or _drop_first_component(cursor_path) == entry_path
    )


def _history_original(current: str, history: list[dict[str, Any]], cursor_path: str) -> str | None:
    """The text before the last user edit of the cursor's file, or ``None`` if not scorable.

    ``None`` when no entry is about this file, when the last such entry was itself an
    accepted prediction (undoing it is not undoing the user), or when its diff is empty.
    """
    entries = [h for h in history if _path_matches(str(h.get("path", "")), cursor_path)]
    if not entries:
        return None
    last = entries[-1]
    diff = last.get("diff") or ""
    if last.get("predicted") or not diff.strip():
        return None
    return _reverse_apply(current, diff)


def reversal_ratio_from_history(
    current: str, history: list[dict[str, Any]], predicted: str, cursor_path: str
) -> float:
    """Reversal ratio of ``predicted`` against the user's last edit to ``cursor_path``.

    History entries are ``{path, diff, predicted, ts_ms}``, oldest first. The last entry for
    the file is reverse-applied to ``current`` to get ``original``; see ``reversal_ratio``.
    """
    original = _history_original(current, history, cursor_path)
    if original is None:
        return 0.0
    return reversal_ratio(original, current, predicted)


# --------------------------------------------------------------------------- delta chrF

_CHRF_MAX_N = 6
_CHRF_CONTEXT = 5
_NEWLINE_RUN = re.compile(r"[\r\n]+")
_SPACE_RUN = re.compile(f"{_WS_CLASS}+")


def _collapse_whitespace(text: str) -> str:
    """Newline runs → one ``\\n``; runs of other whitespace → one space.

    Interpretation: the two kinds are collapsed separately, so ``" \\n  \\n"`` becomes
    ``" \\n \\n"`` (a space run between newlines survives as one space).
    """
    return _SPACE_RUN.sub(" ", _NEWLINE_RUN.sub("\n", text))


@dataclass(frozen=True, slots=True)
class _NgramChange:
    """The n-grams of one n an edit may have changed, counted on each side.

    Only n-grams not inside a matched block are counted (see ``_ngram_changes``); the delta
    of a gram is ``after[g] - before[g]``. ``size`` is Σ|delta| over all grams and ``empty``
    says the spec's delta (zero-count keys included) is empty: neither slice has an n-gram
    of this length. Zero deltas never change TP, FP or FN, so that flag is all that is kept
    of them. Deltas stay implicit (two Counters built in C) because most samples share few
    grams with the expected edit and only those are ever looked at.
    """

    after: Counter[str]
    before: Counter[str]
    size: int
    empty: bool


def _unshared_ngrams(text: str, blocks: list[tuple[int, int]], n: int) -> list[str]:
    """The n-grams of ``text`` that do not lie entirely inside one matched block.

    ``blocks`` are ``(start, size)`` of ``text``'s side of matching blocks against the other
    slice; an n-gram inside a block has an identical twin on the other side, so it cancels
    in the delta and need not be counted at all.
    """
    grams: list[str] = []
    pos = 0
    for start, size in blocks:
        if size < n:
            continue
        if start > pos:
            grams.extend([text[i : i + n] for i in range(pos, start)])
        pos = max(pos, start + size - n + 1)
    grams.extend([text[i : i + n] for i in range(pos, len(text) - n + 1)])
    return grams


def _ngram_changes(before_full: str, after_full: str) -> list[_NgramChange]:
    """The n-gram count changes (n = 1..6) of the changed slice plus 5 chars of context.

    Definition: after stripping the common prefix/suffix (keeping 5 chars of each as
    context), delta = count(after) - count(before) per n-gram; the spec writes a negative
    delta -c of g as count c of ``¬``+g. Computed exactly but cheaply: the slices are
    aligned with rapidfuzz's matching blocks and only n-grams touching a non-matched part
    are counted, since each n-gram inside a matched block is paired with the same n-gram on
    the other side and its contributions cancel.
    """
    p = _common_prefix_len(before_full, after_full)
    s = _common_suffix_len(before_full, after_full, min(len(before_full), len(after_full)) - p)
    lo = max(0, p - _CHRF_CONTEXT)
    cut = max(0, s - _CHRF_CONTEXT)
    before = before_full[lo : len(before_full) - cut]
    after = after_full[lo : len(after_full) - cut]
    matching = Indel.opcodes(before, after).as_matching_blocks()
    before_blocks = [(m.a, m.size) for m in matching if m.size]
    after_blocks = [(m.b, m.size) for m in matching if m.size]
    longest = max(len(before), len(after))
    changes: list[_NgramChange] = []
    for n in range(1, _CHRF_MAX_N + 1):
        after_counts = Counter(_unshared_ngrams(after, after_blocks, n))
        before_counts = Counter(_unshared_ngrams(before, before_blocks, n))
        # Σ|a - b| = Σa + Σb - 2 Σ min(a, b), and min is non-zero only on common grams.
        overlap = 0
        for gram in after_counts.keys() & before_counts.keys():
            a, b = after_counts[gram], before_counts[gram]
            overlap += a if a < b else b
        size = after_counts.total() + before_counts.total() - 2 * overlap
        changes.append(_NgramChange(after_counts, before_counts, size, longest < n))
    return changes


@dataclass(frozen=True, slots=True)
class _Reference:
    """The expected edit's deltas made explicit once: positive and negated grams per n."""

    added: list[dict[str, int]]
    removed: list[dict[str, int]]
    changes: list[_NgramChange]

    @classmethod
    def of(cls, changes: list[_NgramChange]) -> _Reference:
        added: list[dict[str, int]] = []
        removed: list[dict[str, int]] = []
        for ch in changes:
            plus: dict[str, int] = {}
            minus: dict[str, int] = {}
            for gram in ch.after.keys() | ch.before.keys():
                d = ch.after.get(gram, 0) - ch.before.get(gram, 0)
                if d > 0:
                    plus[gram] = d
                elif d < 0:
                    minus[gram] = -d
            added.append(plus)
            removed.append(minus)
        return cls(added, removed, changes)


def _f_beta(expected: _Reference, actual: list[_NgramChange], beta: float) -> float:
    """chrF's F-beta over per-n precision/recall of the actual vs expected deltas.

    TP = Σ min(expected, actual) per key (positive and negated keys separately);
    FP = Σ actual excess = Σ|actual| - TP and FN = Σ expected excess = Σ|expected| - TP,
    so P = TP / Σ|actual| and R = TP / Σ|expected| (0 when that sum is 0).
    """
    p_sum = r_sum = 0.0
    for n, act in enumerate(actual):
        exp = expected.changes[n]
        if exp.empty and act.empty:
            p_sum += 1.0
            r_sum += 1.0
            continue
        tp = 0
        plus, minus = expected.added[n], expected.removed[n]
        for gram in plus.keys() & act.after.keys():
            d = act.after[gram] - act.before.get(gram, 0)
            if d > 0:
                e = plus[gram]
                tp += d if d < e else e
        for gram in minus.keys() & act.before.keys():
            d = act.before[gram] - act.after.get(gram, 0)
            if d > 0:
                e = minus[gram]
                tp += d if d < e else e
        if act.size:
            p_sum += tp / act.size
        if exp.size:
            r_sum += tp / exp.size
    p = p_sum / _CHRF_MAX_N
    r = r_sum / _CHRF_MAX_N
    if p + r == 0:
        return 0.0
    b2 = beta * beta
    return 100.0 * (1 + b2) * p * r / (b2 * p + r)


class _DeltaChrfScorer:
    """delta chrF of many actual texts against one (original, expected): expected cached."""

    def __init__(self, original: str, expected: str, beta: float) -> None:
        self.original = original
        self.expected = expected
        self.beta = beta
        self._original_c = _collapse_whitespace(original)
        self._reference = _Reference.of(
            _ngram_changes(self._original_c, _collapse_whitespace(expected))
        )

    def score(self, actual: str) -> float:
        if self.original == self.expected == actual:
            return 100.0
        changes = _ngram_changes(self._original_c, _collapse_whitespace(actual))
        return _f_beta(self._reference, changes, self.beta)


def delta_chrf(original: str, expected: str, actual: str, beta: float = 0.5) -> float:
    """chrF (0..100) between the expected change and the actual change of ``original``.

    Comparing n-gram *deltas* rewards making the right change, not being near the text:
    ``actual == original`` scores low even when the expected edit is tiny.

    Interpretations: "before" is the stripped original slice and "after" the stripped
    expected (resp. actual) slice; expected deltas are the reference, actual deltas the
    hypothesis (TP = Σ min, FP = Σ actual excess, FN = Σ expected excess). Because
    unchanged n-grams stay as zero-count keys, an n with only zero deltas has P = R = 0, so
    ``actual == expected`` gives 100 only when every n either changes some count or has no
    n-grams at all (e.g. a whitespace-only or anagram edit scores below 100).
    """
    return _DeltaChrfScorer(original, expected, beta).score(actual)


# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class SampleScore:
    """All metrics of one predicted region against the settled region."""

    distance: float
    exact: bool
    kept_rate: float
    recall_rate: float
    reversal_ratio: float
    delta_chrf: float

    def to_dict(self) -> dict[str, float | bool]:
        """JSON-able dict; floats rounded to 6 decimals so records stay stable and small."""
        return {
            "distance": round(self.distance, 6),
            "exact": self.exact,
            "kept_rate": round(self.kept_rate, 6),
            "recall_rate": round(self.recall_rate, 6),
            "reversal_ratio": round(self.reversal_ratio, 6),
            "delta_chrf": round(self.delta_chrf, 6),
        }


def score_prediction(
    base: str, settled: str, predicted: str, *, history: list[dict[str, Any]], path: str
) -> SampleScore:
    """Score one prediction by composing the public metrics (the reference implementation)."""
    kr = kept_rate(base, predicted, settled)
    return SampleScore(
        distance=normalized_levenshtein(predicted, settled),
        exact=predicted == settled,
        kept_rate=kr.kept_rate,
        recall_rate=kr.recall_rate,
        reversal_ratio=reversal_ratio_from_history(base, history, predicted, path),
        delta_chrf=delta_chrf(base, settled, predicted),
    )


def score_samples(
    base: str, settled: str, samples: list[str], *, history: list[dict[str, Any]], path: str
) -> list[SampleScore]:
    """Score N samples of one region; equal to ``score_prediction`` on each, but faster.

    Everything that depends only on base/settled/history is prepared once (reference-side
    LCS of the kept rate, history ``original`` and its edits, expected n-gram deltas, base
    line split), and identical samples are scored once.
    """
    kept = _KeptRateScorer(base, settled)
    original = _history_original(base, history, path)
    reversal = _ReversalScorer(original, base) if original is not None else None
    chrf = _DeltaChrfScorer(base, settled, 0.5)
    done: dict[str, SampleScore] = {}
    out: list[SampleScore] = []
    for sample in samples:
        score = done.get(sample)
        if score is None:
            kr = kept.score(sample)
            score = SampleScore(
                distance=normalized_levenshtein(sample, settled),
                exact=sample == settled,
                kept_rate=kr.kept_rate,
                recall_rate=kr.recall_rate,
                reversal_ratio=reversal.score(sample) if reversal is not None else 0.0,
                delta_chrf=chrf.score(sample),
            )
            done[sample] = score
        out.append(score)
    return out
