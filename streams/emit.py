"""Emit stage: training-ready records and rejections, with deterministic ids and splits.

The split is a stable hash of the repository (its `streams.repo` key, so every spelling of one
URL agrees), so one repository never lands in both train and eval (no leakage across the split).
It is the streaming view: `editstream export` refines it with near-duplicate groups and the
eval policy (`streams/dataset.py`). Record ids hash the pipeline version, request id, kind and
prompt format, so reprocessing the same input yields the same keys for deduplication.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, cast

from schemas.records import (
    Judgement,
    RejectedExample,
    RepairRequest,
    ScoredExample,
    SettledExample,
    Summary,
    TrainingRecord,
)
from streams.formats import build_prompt, completion_for, format_id
from streams.ids import stable_fraction, stable_hash
from streams.repo import repo_key, split_unit
from streams.scoring import kept_rate, normalized_levenshtein
from streams.settings import Settings


def split_for(example: SettledExample, eval_fraction: float) -> str:
    # Without a repository, the session is the unit that must not straddle the split.
    return "eval" if stable_fraction("split", split_unit(example)) < eval_fraction else "train"


def record_id(settings: Settings, request_id: str, kind: str) -> str:
    fmt = format_id(settings.record_format)  # an alias and its format give the same ids
    return stable_hash(settings.pipeline_version, request_id, kind,
                       f"{fmt['name']}.v{fmt['version']}")


def _provenance(source: Mapping[str, Any], settings: Settings, attempts: int) -> dict[str, Any]:
    ex = source["example"]
    return {
        "session_id": ex["session_id"],
        "path": ex["path"],
        # the repository's key, never the URL as written (it may carry credentials)
        "repo": repo_key(ex.get("repo_url")),
        "revision": ex.get("revision"),
        "served_model_version": ex.get("model_version"),
        "student_model": source["student"]["model"],
        "student_prompt_format": source["student"].get("prompt_format"),
        "teacher_model": settings.teacher_model,
        "judge_model": settings.judge_model if settings.judge_url else None,
        "band": source.get("band"),
        "valid_samples": source.get("valid_samples"),
        "settle_reason": ex["settle_reason"],
        "settled_at_ms": ex["settled_at_ms"],
        "outcome": ex.get("outcome"),
        "repair_attempts": attempts,
        # what near-duplicate detection compares (the export's streams/neardup.py)
        "base_region": ex.get("base_region"),
        "settled_region": ex.get("settled_region"),
    }


def undone(example: SettledExample) -> bool:
    """A served prediction the user accepted and then undid inside the settle window: little
    of its edit survives in the settled region."""
    served = example.get("output")
    if example.get("outcome") != "accepted" or not isinstance(served, str):
        return False
    if served == example["base_region"]:
        return False
    return kept_rate(example["base_region"], served, example["settled_region"]).kept_rate < 0.5


def rejected_side(source: ScoredExample | RepairRequest, region: str) -> tuple[str | None, str]:
    """(rejected region, its source) for a preference pair, or (None, why there is none).

    The user's own verdict wins: a served output they rejected, or accepted and undid.
    Otherwise the student's own valid sample farthest from the settled region (on-policy)."""
    ex = source["example"]
    served = ex.get("output")
    if isinstance(served, str) and served != region:
        if ex.get("outcome") == "rejected":
            return served, "user_rejected_output"
        if undone(ex):
            return served, "user_undid_output"
    candidate = source.get("rejected_candidate")
    if isinstance(candidate, str):
        return candidate, "student_farthest_sample"
    return None, "no_rejected_candidate"


def training_records(
    source: ScoredExample | RepairRequest,
    region: str,
    judgement: Judgement,
    settings: Settings,
    *,
    attempts: int = 0,
) -> list[TrainingRecord]:
    """SFT always; a preference pair when there is a rejected side far enough from the
    chosen one (else the SFT record says why there is no pair)."""
    ex = source["example"]
    fmt = format_id(settings.record_format)
    prompt = build_prompt(ex, settings.record_format, settings.prompt_max_tokens)
    chosen = completion_for(region, settings.record_format, ex["base_region"])
    noop = region == ex["base_region"]
    base: dict[str, Any] = {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "prompt_format": fmt["name"],
        "prompt_format_version": fmt["version"],
        "split": split_for(ex, settings.eval_fraction),
        "request_id": ex["request_id"],
        "prompt": prompt,
        "noop": noop,
        "provenance": _provenance(source, settings, attempts),
        "scores": {"student": source["summary"], "teacher": {
            "distance": judgement.get("distance"),
            "reversal_ratio": judgement.get("reversal_ratio"),
            "kept_rate": judgement.get("kept_rate"),
            "llm_confidence": cast(Mapping[str, Any],
                                   judgement.get("llm") or {}).get("confidence")}},
    }
    # built in the contract's field order (the records' bytes are compared across runs)
    sft = cast(TrainingRecord, {"id": record_id(settings, ex["request_id"], "sft"),
                                "format": "sft", **base, "completion": chosen})
    records = [sft]
    rejected, why = rejected_side(source, region)
    if rejected is not None:
        gap = normalized_levenshtein(rejected, region)
        if gap < settings.pair_min_distance:
            rejected, why = None, "pair_too_similar"
    if rejected is None:
        sft["preference_dropped"] = why
        return records
    records.append(cast(TrainingRecord, {
        "id": record_id(settings, ex["request_id"], "preference"), "format": "preference",
        **base, "chosen": chosen,
        "rejected": completion_for(rejected, settings.record_format, ex["base_region"]),
        "rejected_source": why}))
    return records


def reference_record(scored: Mapping[str, Any], settings: Settings) -> TrainingRecord:
    """An unfiltered eval record from a `scored-examples` record (as the export reads it,
    without the per-sample scores): any band, no teacher; the completion is the settled
    region (what the user really wrote), for measuring a student."""
    ex = scored["example"]
    prov = {**_provenance(scored, settings, 0), "teacher_model": None, "judge_model": None}
    return {
        "v": 1,
        "id": record_id(settings, ex["request_id"], "reference"),
        "format": "sft",
        "pipeline_version": settings.pipeline_version,
        "prompt_format": settings.record_format,
        "split": "eval_unfiltered",
        "request_id": ex["request_id"],
        "prompt": build_prompt(ex, settings.record_format),
        "completion": completion_for(ex["settled_region"], settings.record_format),
        "provenance": prov,
        "scores": {"student": scored.get("summary"), "teacher": None},
    }


def rejected_record(
    request_id: str,
    stage: str,
    reason: str,
    settings: Settings,
    *,
    example: SettledExample | dict[str, Any] | None = None,
    detail: str | None = None,
    band: str | None = None,
    summary: Summary | None = None,
    judgement: Judgement | None = None,
) -> RejectedExample:
    return {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "request_id": request_id,
        "stage": stage,
        "reason": reason,
        "detail": detail,
        "example": example,
        "band": band,
        "summary": summary,
        "judgement": judgement,
    }


def dlq_record(stage: str, reason: str, detail: str | None, topic: str, partition: int,
               offset: int, original: bytes, settings: Settings) -> dict[str, Any]:
    return {
        "v": 1,
        "pipeline_version": settings.pipeline_version,
        "stage": stage,
        "reason": reason,
        "detail": detail,
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "original_b64": base64.b64encode(original).decode(),
    }
