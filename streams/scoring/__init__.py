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
