"""Typed views of the contract's records, for the type checker (the JSON Schemas are binding).

Stages fill in one record type stage by stage: a settled example travels inside every
downstream record, so any stage can format a prompt without looking anything up.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

SettleReason = Literal["quiescence", "ttl", "client", "context_lost"]
Band = Literal["trivial", "ideal", "noise"]
Outcome = Literal["accepted", "rejected", "discarded", "ignored"]


class HistoryEntry(TypedDict):
    path: str
    diff: str
    predicted: bool
    ts_ms: int


class SettledExample(TypedDict):
    v: int
    pipeline_version: str
    session_id: str
    ts_ms: int
    can_collect_data: bool
    request_id: str
    path: str
    in_open_source_repo: bool
    repo_url: NotRequired[str | None]
    revision: NotRequired[str | None]
    excerpt: str
    excerpt_start: int
    cursor: int
    editable_range: list[int]
    history: list[HistoryEntry]
    model_version: NotRequired[str | None]
    output: NotRequired[str | None]
    settle_reason: SettleReason
    settled_at_ms: int
    base_region: str
    settled_region: str
    touching_edits: int
    outcome: NotRequired[Outcome]
    was_shown: NotRequired[bool]


class StudentInfo(TypedDict):
    model: str
    n: int
    temperature: float
    max_tokens: int
    prompt_format: str
    seed: int
    mode: NotRequired[str]


class StudentSamples(TypedDict):
    v: int
    pipeline_version: str
    request_id: str
    example: SettledExample
    student: StudentInfo
    samples: list[str]
    latencies_ms: list[float]
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int


class Summary(TypedDict):
    n: int
    mean: float
    p10: float
    p50: float
    p90: float
    frac_exact: float
    reversal_mean: float


class ScoredExample(TypedDict):
    v: int
    pipeline_version: str
    request_id: str
    example: SettledExample
    student: StudentInfo
    scores: list[dict[str, float | bool]]
    summary: Summary
    band: Band
    thresholds: dict[str, float]


class Judgement(TypedDict):
    ok: bool
    reasons: list[str]
    parse_ok: bool
    distance: float | None
    reversal_ratio: float | None
    llm: NotRequired[dict[str, object] | None]


class RepairRequest(TypedDict):
    v: int
    pipeline_version: str
    request_id: str
    example: SettledExample
    student: StudentInfo
    summary: Summary
    band: Band
    attempt: int
    judgement: Judgement
    previous: str
    rejected_predictions: list[str]


class TrainingRecord(TypedDict):
    v: int
    pipeline_version: str
    id: str
    format: Literal["sft", "preference"]
    prompt_format: str
    split: Literal["train", "eval"]
    request_id: str
    prompt: str
    completion: NotRequired[str]
    chosen: NotRequired[str]
    rejected: NotRequired[str]
    rejected_source: NotRequired[str]
    provenance: dict[str, object]
    scores: dict[str, object]


class RejectedExample(TypedDict):
    v: int
    pipeline_version: str
    request_id: str
    stage: str
    reason: str
    detail: NotRequired[str | None]
    example: NotRequired[SettledExample | None]
    band: NotRequired[str | None]
    summary: NotRequired[Summary | None]
    judgement: NotRequired[Judgement | None]


RetryStage = Literal["sample", "distill", "repair"]


class ModelRetry(TypedDict):
    """`model-retry`: an example re-queued for its stage after a model outage. The payload is
    the stage's input record (a settled example, a scored example or a repair record)."""

    v: int
    pipeline_version: str
    request_id: str
    stage: RetryStage
    attempt: int
    reason: str
    not_before_ms: int
    payload: dict[str, Any]
