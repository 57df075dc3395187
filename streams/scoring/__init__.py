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

One module per metric: ``distance``, ``kept_rate``, ``reversal`` (with ``edits``, the
histogram/token differ, and ``udiff``, the unified-diff parser of history entries) and
``chrf``; ``tokens`` and ``lcs`` are shared by them. This module composes them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.scoring.chrf import _DeltaChrfScorer, delta_chrf
from streams.scoring.distance import normalized_levenshtein

# Private helpers re-exported for the reference-value tests.
from streams.scoring.edits import _diff_edits as _diff_edits
from streams.scoring.edits import _Edit as _Edit
from streams.scoring.kept_rate import KeptRate, _KeptRateScorer, kept_rate
from streams.scoring.lcs import _keep_masks as _keep_masks
from streams.scoring.reversal import (
    _history_original,
    _ReversalScorer,
    reversal_ratio,
    reversal_ratio_from_history,
)
from streams.scoring.tokens import tokenize
from streams.scoring.udiff import _reverse_apply as _reverse_apply

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

# --------------------------------------------------------------------------- pipeline


@dataclass(frozen=True)
class SampleScore:
    """The metrics of one predicted region against the settled region.

    ``distance`` and ``exact`` are always there (the band needs them); the other metrics are
    ``None`` for a sample ``score_samples`` was asked to score for distance only.
    """

    distance: float
    exact: bool
    kept_rate: float | None = None
    recall_rate: float | None = None
    reversal_ratio: float | None = None
    delta_chrf: float | None = None

    def to_dict(self) -> dict[str, float | bool]:
        """JSON-able dict; floats rounded to 6 decimals so records stay stable and small.
        Metrics not computed are left out (not written as null)."""
        out: dict[str, float | bool] = {"distance": round(self.distance, 6), "exact": self.exact}
        for key in ("kept_rate", "recall_rate", "reversal_ratio", "delta_chrf"):
            value = getattr(self, key)
            if value is not None:
                out[key] = round(value, 6)
        return out


def score_prediction(
    base: str, settled: str, predicted: str, *, history: Sequence[Mapping[str, Any]], path: str
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
    base: str,
    settled: str,
    samples: list[str],
    *,
    history: Sequence[Mapping[str, Any]],
    path: str,
    metrics: Collection[int] | None = None,
) -> list[SampleScore]:
    """Score N samples of one region; equal to ``score_prediction`` on each, but faster.

    ``metrics``: the indices of the samples that get every metric; the others get only
    ``distance`` and ``exact`` (a C Levenshtein call each). ``None``: all of them. The other
    metrics cost ~100x a distance each (token LCS, line diffs, n-gram deltas), so the score
    stage asks for them on a small subset only (``streams.score.metric_indices``).

    Everything that depends only on base/settled/history is prepared once, lazily (reference
    side LCS of the kept rate, history ``original`` and its edits, expected n-gram deltas),
    and identical samples are scored once.
    """
    full = range(len(samples)) if metrics is None else frozenset(metrics)
    scorers: tuple[_KeptRateScorer, _ReversalScorer | None, _DeltaChrfScorer] | None = None
    done: dict[str, SampleScore] = {}  # all metrics, by sample text
    near: dict[str, SampleScore] = {}  # distance only, by sample text
    out: list[SampleScore] = []
    for i, sample in enumerate(samples):
        if i not in full:
            score = near.get(sample)
            if score is None:
                score = SampleScore(normalized_levenshtein(sample, settled), sample == settled)
                near[sample] = score
            out.append(score)
            continue
        score = done.get(sample)
        if score is None:
            if scorers is None:
                original = _history_original(base, history, path)
                scorers = (
                    _KeptRateScorer(base, settled),
                    _ReversalScorer(original, base) if original is not None else None,
                    _DeltaChrfScorer(base, settled, 0.5),
                )
            kept, reversal, chrf = scorers
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
