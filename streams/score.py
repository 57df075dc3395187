"""Score stage: every student sample against the settled region, then the band decision.

Too close to the settled code (`trivial`) teaches nothing; too far (`noise`) is usually a
prompt the student could not read or a settle that went wrong. The middle (`ideal`) is kept.
The metric definitions live in `streams.scoring`.

Only valid samples count: one cut by ``max_tokens`` (``finish_reason: length``) or one whose
answer does not parse in the prompt format is kept in the record with ``invalid`` set, but
left out of the summary and the band median (scoring its raw text would call a model that
rambles "noise" and one that answers in prose "far"). An example with fewer than
``min_valid_samples`` valid samples is marked ``unparsable_samples`` and rejected.

Every sample gets ``distance`` and ``exact`` (the band needs them; one C call each). The
other metrics (kept/recall rate, reversal ratio, delta chrF) cost ~100x more per sample, so
they are computed for the first ``score_metrics_samples`` valid samples only (samples are
independent draws, so the first k are a uniform sample of them and their mean estimates the
mean over all without bias); the summary's ``*_mean`` figures are over those
``n_metrics`` samples. The teacher's target gets them all in the judge (streams/judge.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas.records import Band, ScoredExample, SettledExample, StudentSamples, Summary
from streams.formats import parse_answer
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


def summarise(all_scores: Sequence[Mapping[str, Any]]) -> Summary:
    """Distribution of the valid samples' scores, with how many samples were invalid.
    Means of the metrics other than distance are over the valid samples that have them."""
    scores = [s for s in all_scores if not s.get("invalid")]
    distances = sorted(float(s["distance"]) for s in scores)
    n = len(distances)
    full = [s for s in scores if "kept_rate" in s]

    def mean(key: str) -> float:
        return round(sum(float(s[key]) for s in full) / len(full), 6) if full else 0.0

    return {
        "n": n,
        "mean": round(sum(distances) / n, 6) if n else 0.0,
        "p10": round(quantile(distances, 0.1), 6),
        "p50": round(quantile(distances, 0.5), 6),
        "p90": round(quantile(distances, 0.9), 6),
        "frac_exact": round(sum(1 for s in scores if s["exact"]) / n, 6) if n else 0.0,
        "reversal_mean": mean("reversal_ratio"),
        "kept_rate_mean": mean("kept_rate"),
        "delta_chrf_mean": mean("delta_chrf"),
        "n_metrics": len(full),
        "n_samples": len(all_scores),
        "n_truncated": sum(1 for s in all_scores if s.get("invalid") == "truncated"),
        "n_unparsable": sum(1 for s in all_scores if s.get("invalid") == "unparsable"),
    }


def decide_band(median_distance: float, band_low: float, band_high: float) -> Band:
    if median_distance < band_low:
        return "trivial"
    if median_distance > band_high:
        return "noise"
    return "ideal"


def metric_indices(valid: Sequence[bool], limit: int | None) -> list[int]:
    """The samples that get every metric: the first ``limit`` valid ones (all: ``None``)."""
    indices = [i for i, ok in enumerate(valid) if ok]
    return indices if limit is None else indices[:max(0, limit)]


def score_texts(
    example: SettledExample,
    texts: Sequence[str],
    prompt_format: str,
    finish_reasons: Sequence[str] | None = None,
    metrics_samples: int | None = None,
) -> list[dict[str, Any]]:
    """Per-sample score dicts. A truncated or unparsable answer is scored as its raw text
    for the record (so it can be read) but marked ``invalid`` with the reason. Every metric
    for the first ``metrics_samples`` valid samples (``None``: all), distance for all."""
    reasons = list(finish_reasons) if finish_reasons else ["stop"] * len(texts)
    parsed = [parse_answer(t, prompt_format, example["base_region"], f)
              for t, f in zip(texts, reasons, strict=True)]
    regions = [t if p.region is None else p.region for t, p in zip(texts, parsed, strict=True)]
    scores = score_samples(
        example["base_region"],
        example["settled_region"],
        regions,
        history=example.get("history") or [],
        path=example["path"],
        metrics=metric_indices([p.ok for p in parsed], metrics_samples),
    )
    out = []
    for s, p in zip(scores, parsed, strict=True):
        d = s.to_dict()
        d["parse_ok"] = p.ok
        if not p.ok:
            d["invalid"] = "truncated" if p.error == "truncated" else "unparsable"
        out.append(d)
    return out


def farthest_valid(texts: Sequence[str], scores: Sequence[Mapping[str, Any]],
                   example: SettledExample, prompt_format: str,
                   finish_reasons: Sequence[str] | None = None,
                   ceiling: float = 1.0) -> str | None:
    """The valid sample farthest from the settled region (an on-policy negative). Samples
    beyond ``ceiling`` (the noise band) are taken only when there is no other: a negative
    the model would never confuse with a good answer teaches little."""
    reasons = list(finish_reasons) if finish_reasons else ["stop"] * len(texts)
    best: tuple[bool, float, int] | None = None
    for i, s in enumerate(scores):
        if s.get("invalid"):
            continue
        key = (float(s["distance"]) <= ceiling, float(s["distance"]), i)
        if best is None or key[:2] > best[:2]:
            best = key
    if best is None:
        return None
    return parse_answer(texts[best[2]], prompt_format, example["base_region"],
                        reasons[best[2]]).region


def min_valid(settings: Settings) -> int:
    """Valid samples an example needs: ``min_valid_samples``, or half of the samples asked
    for when that is fewer (4 samples with one cut short still give a usable median)."""
    return min(settings.min_valid_samples, max(1, (settings.samples + 1) // 2))


def score_example(samples: StudentSamples, settings: Settings) -> ScoredExample:
    """A `scored-examples` record from a `student-samples` record."""
    example = samples["example"]
    fmt = samples["student"]["prompt_format"]
    finish = samples.get("finish_reasons")
    scores = score_texts(example, samples["samples"], fmt, finish,
                         settings.score_metrics_samples)
    summary = summarise(scores)
    valid = int(summary["n"])
    return {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "request_id": samples["request_id"],
        "example": example,
        "student": samples["student"],
        "scores": scores,
        "summary": summary,
        # With no valid sample at all the student produced nothing usable: noise.
        "band": decide_band(summary["p50"], settings.band_low, settings.band_high)
        if valid else "noise",
        "valid_samples": valid,
        "unparsable_samples": valid < min_valid(settings),
        "thresholds": {"band_low": settings.band_low, "band_high": settings.band_high,
                       "min_valid_samples": settings.min_valid_samples},
        "rejected_candidate": farthest_valid(samples["samples"], scores, example, fmt, finish,
                                             settings.band_high),
    }
