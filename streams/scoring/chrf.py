"""Delta chrF: chrF of the n-gram changes an edit makes, not of the whole texts."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from rapidfuzz.distance import Indel

from streams.scoring import backend
from streams.scoring.lcs import _common_prefix_len, _common_suffix_len
from streams.scoring.tokens import _WS_CLASS

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


def _aligned_slices(
    before_full: str, after_full: str
) -> tuple[str, str, list[tuple[int, int]], list[tuple[int, int]]]:
    """The changed slices (5 chars of context kept) and each one's matching blocks."""
    p = _common_prefix_len(before_full, after_full)
    s = _common_suffix_len(before_full, after_full, min(len(before_full), len(after_full)) - p)
    lo = max(0, p - _CHRF_CONTEXT)
    cut = max(0, s - _CHRF_CONTEXT)
    before = before_full[lo : len(before_full) - cut]
    after = after_full[lo : len(after_full) - cut]
    matching = Indel.opcodes(before, after).as_matching_blocks()
    before_blocks = [(m.a, m.size) for m in matching if m.size]
    after_blocks = [(m.b, m.size) for m in matching if m.size]
    return before, after, before_blocks, after_blocks


def _ngram_changes(before_full: str, after_full: str) -> list[_NgramChange]:
    """The n-gram count changes (n = 1..6) of the changed slice plus 5 chars of context.

    Definition: after stripping the common prefix/suffix (keeping 5 chars of each as
    context), delta = count(after) - count(before) per n-gram; the spec writes a negative
    delta -c of g as count c of ``¬``+g. Computed exactly but cheaply: the slices are
    aligned with rapidfuzz's matching blocks and only n-grams touching a non-matched part
    are counted, since each n-gram inside a matched block is paired with the same n-gram on
    the other side and its contributions cancel.
    """
    before, after, before_blocks, after_blocks = _aligned_slices(before_full, after_full)
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
    """delta chrF of many actual texts against one (original, expected): expected cached.

    The deltas and F-beta come from the compiled ``_native`` module when
    ``backend.use_native()`` at construction, else from the pure-Python code above (the
    reference implementation; same floats).
    """

    def __init__(self, original: str, expected: str, beta: float) -> None:
        self.original = original
        self.expected = expected
        self.beta = beta
        self._native = backend.use_native()
        if self._native:
            ext = backend.native
            self._original_c = ext.collapse_whitespace(original)
            self._native_ref = ext.ngram_deltas(
                *_aligned_slices(self._original_c, ext.collapse_whitespace(expected))
            )
            return
        self._original_c = _collapse_whitespace(original)
        self._reference = _Reference.of(
            _ngram_changes(self._original_c, _collapse_whitespace(expected))
        )

    def score(self, actual: str) -> float:
        if self.original == self.expected == actual:
            return 100.0
        if self._native:
            ext = backend.native
            deltas = ext.ngram_deltas(
                *_aligned_slices(self._original_c, ext.collapse_whitespace(actual))
            )
            return ext.f_beta(self._native_ref, deltas, self.beta)
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
