"""Score stage: every student sample against the settled region, then the band decision.

Too close to the settled code (`trivial`) teaches nothing; too far (`noise`) is usually a
prompt the student could not read or a settle that went wrong. The middle (`ideal`) is kept.
The metric definitions live in `streams.scoring`.

Only valid samples count: one cut by ``max_tokens`` (``finish_reason: length``) or one whose
answer does not parse in the prompt format is kept in the record with ``invalid`` set, but
left out of the summary and the band median (scoring its raw text would call a model that
rambles "noise" and one that answers in prose "far"). An example with fewer than
``min_valid_samples`` valid samples is marked ``unparsable_samples`` and rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def summarise(all_scores: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Distribution of the valid samples' scores, with how many samples were invalid."""
    scores = [s for s in all_scores if not s.get("invalid")]
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
        "n_samples": len(all_scores),
        "n_truncated": sum(1 for s in all_scores if s.get("invalid") == "truncated"),
        "n_unparsable": sum(1 for s in all_scores if s.get("invalid") == "unparsable"),
    }


def decide_band(median_distance: float, band_low: float, band_high: float) -> str:
    if median_distance < band_low:
        return "trivial"
    if median_distance > band_high:
        return "noise"
    return "ideal"


def score_texts(
    example: dict[str, Any],
    texts: Sequence[str],
    prompt_format: str,
    finish_reasons: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per-sample score dicts. A truncated or unparsable answer is scored as its raw text
    for the record (so it can be read) but marked ``invalid`` with the reason."""
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
    )
    out = []
    for s, p in zip(scores, parsed, strict=True):
        d = s.to_dict()
        d["parse_ok"] = p.ok
        if not p.ok:
            d["invalid"] = "truncated" if p.error == "truncated" else "unparsable"
        out.append(d)
    return out


def farthest_valid(texts: Sequence[str], scores: Sequence[dict[str, Any]],
                   example: dict[str, Any], prompt_format: str,
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


def score_example(samples: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A `scored-examples` record from a `student-samples` record."""
    example = samples["example"]
    fmt = samples["student"]["prompt_format"]
    finish = samples.get("finish_reasons")
    scores = score_texts(example, samples["samples"], fmt, finish)
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
