"""Score stage: every student sample against the settled region, then the band decision.

Too close to the settled code (`trivial`) teaches nothing; too far (`noise`) is usually a
prompt the student could not read or a settle that went wrong. The middle (`ideal`) is kept.
The metric definitions live in `streams.scoring`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.formats import parse_output
from streams.scoring import score_samples
from streams.settings import Settings


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return 0.0
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarise(scores: Sequence[dict[str, Any]]) -> dict[str, float]:
    distances = sorted(float(s["distance"]) for s in scores)
    n = len(distances)

    def mean(key: str) -> float:
        return round(sum(float(s[key]) for s in scores) / n, 6) if n else 0.0

    return {
        "n": n,
        "mean": mean("distance"),
        "p10": round(quantile(distances, 0.1), 6),
        "p50": round(quantile(distances, 0.5), 6),
        "p90": round(quantile(distances, 0.9), 6),
        "frac_exact": round(sum(1 for s in scores if s["exact"]) / n, 6) if n else 0.0,
        "reversal_mean": mean("reversal_ratio"),
        "kept_rate_mean": mean("kept_rate"),
        "delta_chrf_mean": mean("delta_chrf"),
    }


def decide_band(median_distance: float, band_low: float, band_high: float) -> str:
    if median_distance < band_low:
        return "trivial"
    if median_distance > band_high:
        return "noise"
    return "ideal"


def score_texts(
    example: dict[str, Any], texts: Sequence[str], prompt_format: str
) -> list[dict[str, Any]]:
    """Per-sample score dicts; an answer that does not parse is scored as its raw text."""
    parsed = [parse_output(t, prompt_format) for t in texts]
    regions = [t if p is None else p for t, p in zip(texts, parsed, strict=True)]
    scores = score_samples(
        example["base_region"],
        example["settled_region"],
        regions,
        history=example.get("history") or [],
        path=example["path"],
    )
    out = []
    for s, p in zip(scores, parsed, strict=True):
        d = s.to_dict()
        d["parse_ok"] = p is not None
        out.append(d)
    return out


def score_example(samples: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A `scored-examples` record from a `student-samples` record."""
    example = samples["example"]
    scores = score_texts(example, samples["samples"], samples["student"]["prompt_format"])
    summary = summarise(scores)
    return {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "request_id": samples["request_id"],
        "example": example,
        "student": samples["student"],
        "scores": scores,
        "summary": summary,
        "band": decide_band(summary["p50"], settings.band_low, settings.band_high),
        "thresholds": {"band_low": settings.band_low, "band_high": settings.band_high},
    }
