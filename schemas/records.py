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
    prompt_format_version: int
    stop: list[str]
    seed: int | None
    history_dropped: NotRequired[int]
    mode: NotRequired[str]
    n_per_request: NotRequired[int]
    short_responses: NotRequired[int]


class StudentSamples(TypedDict):
    v: int
    pipeline_version: str
    request_id: str
    example: SettledExample
    student: StudentInfo
    samples: list[str]
    finish_reasons: list[str]
    latencies_ms: list[float]
    requests: int
    retries: int
    prompt_tokens: int
    completion_tokens: int
    adaptive: NotRequired[dict[str, Any]]


class Summary(TypedDict):
    """Distribution of the valid samples' distances (`streams.score.summarise`); the other
    means are over the ``n_metrics`` samples that have every metric."""

    n: int
    mean: float
    p10: float
    p50: float
    p90: float
    frac_exact: float
    reversal_mean: float
    kept_rate_mean: float
    delta_chrf_mean: float
    n_metrics: int
    n_samples: int
    n_truncated: int
    n_unparsable: int


class ScoredExample(TypedDict):
    v: int
    pipeline_version: str
    request_id: str
    example: SettledExample
    student: StudentInfo
    scores: list[dict[str, Any]]
    summary: Summary
    band: Band
    valid_samples: int
    unparsable_samples: bool
    thresholds: dict[str, float]
    rejected_candidate: str | None


class LlmVerdict(TypedDict):
    """The LLM judge's answer (`streams.judge.parse_llm_judgement`)."""

    reasoning: str
    reverts_edits: bool
    confidence: int


class Judgement(TypedDict):
    """The gates' verdict on a teacher answer (`streams.judge.check_target`); the no-op
    target's is fixed (``noop``: true, no ``parse_error``)."""

    ok: bool
    reasons: list[str]
    parse_ok: bool
    parse_error: NotRequired[str | None]
    distance: float | None
    reversal_ratio: float | None
    kept_rate: float | None
    student_median: NotRequired[float | None]  # set when the answer parsed
    llm: NotRequired[LlmVerdict | None]  # set when an LLM judge ran (None: unreadable)
    noop: NotRequired[bool]
    # streams.syntax: ok | breaks_syntax | base_broken | unchecked (set when it parsed)
    syntax: NotRequired[str]


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
    rejected_candidate: str | None
    unparsable_samples: bool
    valid_samples: NotRequired[int]  # in the schema; this version's repair records omit it


class TrainingRecord(TypedDict):
    v: int
    pipeline_version: str
    id: str
    format: Literal["sft", "preference"]
    prompt_format: str
    prompt_format_version: NotRequired[int]
    split: Literal["train", "eval", "eval_unfiltered"]
    request_id: str
    prompt: str
    noop: NotRequired[bool]
    completion: NotRequired[str]
    chosen: NotRequired[str]
    rejected: NotRequired[str]
    rejected_source: NotRequired[str]
    preference_dropped: NotRequired[str]
    provenance: dict[str, Any]
    scores: dict[str, Any]


class RejectedExample(TypedDict):
    v: int
    pipeline_version: str
    request_id: str
    stage: str
    reason: str
    detail: str | None
    # the export's near-duplicate rejection (stage export) carries the provenance fields only
    example: SettledExample | dict[str, Any] | None
    band: str | None
    summary: Summary | None
    judgement: Judgement | None


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
    payload: RetryPayload


# what each retry stage is given: sample a settled example, distill a scored one, repair a repair
RetryPayload = SettledExample | ScoredExample | RepairRequest


class EvalMetrics(TypedDict):
    """`streams.scoring.score_prediction(...).to_dict()` of one predicted region."""

    distance: float
    exact: bool
    kept_rate: float
    recall_rate: float
    reversal_ratio: float
    delta_chrf: float


class EvalFailure(TypedDict):
    reason: str  # unparsable | truncated | empty | http_error | timeout | connection | ...
    detail: str


class EvalRecord(TypedDict):
    """`eval-results` (one per settled example and candidate, `noop` and `served` among
    them) and `scorecard` (one per settled prediction with a served output: candidate
    `served`, with `outcome` and `undone`). The shape is /work/notes/EVAL-RECORD.md's, shared
    with `editstream scorecard`."""

    v: int
    pipeline_version: str
    request_id: str
    candidate: str
    model: str | None
    served_model_version: str | None
    split: Literal["train", "eval"]
    language: str
    ts_ms: int
    predicted_region: str | None
    failure: EvalFailure | None
    noop: bool | None
    metrics: EvalMetrics | None
    unchanged_metrics: EvalMetrics | None
    latency_ms: float | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    outcome: NotRequired[Outcome | None]
    undone: NotRequired[bool]
