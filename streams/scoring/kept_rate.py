"""Kept rate / recall rate of a candidate edit against the reference edit."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import compress
from operator import and_, not_

from streams.scoring import backend
from streams.scoring.lcs import _b_mask, _keep_masks
from streams.scoring.tokens import _units, _utf8_len

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


def _unit_bytes(text: str, units: list[str]) -> list[int]:
    """UTF-8 length of each of ``units`` (pieces of ``text``): ``len`` when ``text`` is ASCII."""
    return list(map(len, units)) if text.isascii() else [_utf8_len(u) for u in units]


def _ratio(numerator: int, denominator: int, other_denominator: int) -> float:
    """numerator/denominator; a zero denominator gives 1 iff the other side's is zero too."""
    if denominator == 0:
        return 1.0 if other_denominator == 0 else 0.0
    return numerator / denominator


class _KeptRateScorer:
    """Kept rate of many candidates against one (base, reference): reference side cached.

    The counts come from the compiled ``_native.KeptRateRef`` when ``backend.use_native()``
    at construction, else from the pure-Python code below (the reference implementation).
    """

    def __init__(self, base: str, reference: str) -> None:
        self.base = base
        self.reference = reference
        # Encoding the three texts whole (here and in score) also rejects lone surrogates
        # before either implementation tokenizes anything.
        self._base_bytes = _utf8_len(base)
        self._ref_gap = abs(_utf8_len(reference) - self._base_bytes)
        self._ready = False
        self._native: backend.native.KeptRateRef | None = None
        self._use_native = backend.use_native()

    def _prepare(self) -> None:
        # Lazy: a batch where every candidate bails out never tokenizes anything.
        if self._use_native:
            self._native = backend.native.KeptRateRef(self.base, self.reference)
            self._ref_new_bytes = self._native.reference_new
            self._ref_deleted_bytes = self._native.reference_deleted
            self._ready = True
            return
        # Masks are turned into lists with C-level compress/map: the units are many and short.
        self._base_units = _units(self.base)
        self._base_unit_bytes = _unit_bytes(self.base, self._base_units)
        ref_units = _units(self.reference)
        ref_keep, base_keep = _keep_masks(ref_units, self._base_units)
        self._ref_new = list(compress(ref_units, map(not_, ref_keep)))
        self._ref_new_bytes = sum(_unit_bytes(self.reference, self._ref_new))
        self._ref_base_dropped = list(map(not_, base_keep))
        self._ref_deleted_bytes = sum(compress(self._base_unit_bytes, self._ref_base_dropped))
        self._ready = True

    def score(self, candidate: str) -> KeptRate:
        if candidate == self.base == self.reference:
            return _KEPT_ALL
        gap = abs(_utf8_len(candidate) - self._base_bytes)
        if abs(gap - self._ref_gap) > _KEPT_RATE_MAX_SIZE_GAP:
            return _KEPT_NONE
        if not self._ready:
            self._prepare()
        if self._native is not None:
            cand_new_total, cand_deleted, kept, correctly_deleted = self._native.score(candidate)
        else:
            cand_new_total, cand_deleted, kept, correctly_deleted = self._counts(candidate)
        cand_total = cand_new_total + cand_deleted
        ref_total = self._ref_new_bytes + self._ref_deleted_bytes
        good = kept + correctly_deleted
        return KeptRate(
            kept_rate=_ratio(good, cand_total, ref_total),
            recall_rate=_ratio(good, ref_total, cand_total),
            candidate_new=cand_new_total,
            candidate_deleted=cand_deleted,
            reference_new=self._ref_new_bytes,
            reference_deleted=self._ref_deleted_bytes,
            kept=kept,
            correctly_deleted=correctly_deleted,
        )

    def _counts(self, candidate: str) -> tuple[int, int, int, int]:
        """(candidate new, candidate deleted, kept, correctly deleted) bytes, in Python."""
        cand_units = _units(candidate)
        cand_keep, base_keep = _keep_masks(cand_units, self._base_units)
        cand_new = list(compress(cand_units, map(not_, cand_keep)))
        cand_new_bytes = _unit_bytes(candidate, cand_new)
        base_dropped = list(map(not_, base_keep))
        cand_deleted = sum(compress(self._base_unit_bytes, base_dropped))
        kept_mask = _b_mask(self._ref_new, cand_new)  # cand_new's mask in LCS(cand_new, ref_new)
        kept = sum(compress(cand_new_bytes, kept_mask))
        correctly_deleted = sum(compress(self._base_unit_bytes,
                                         map(and_, base_dropped, self._ref_base_dropped)))
        return sum(cand_new_bytes), cand_deleted, kept, correctly_deleted


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
