"""Prometheus metrics of the worker: defined once here, updated only by the agents.

Naming follows the Prometheus conventions: an `editstream_` prefix, base units (seconds,
ratios, messages), `_total` on counters. Labels are bounded sets (event types, stages,
reasons from fixed vocabularies, bands, model kinds, topic names and partition numbers);
never a request id, session id or path.

Several workers on one host: set `PROMETHEUS_MULTIPROC_DIR` (see `editstream/worker.py`);
gauges then declare how the per-process values combine (`multiprocess_mode`).

Registration is explicit and lazy: importing this module registers nothing. `register()`
(or the first use of a metric, e.g. `metrics.DLQ`) creates every metric, with the value store
the environment names at that moment, so whether prometheus_client was imported before or
after `PROMETHEUS_MULTIPROC_DIR` was set no longer matters. Label values that are known up
front are created then with a zero value, so a panel or alert on them has a series (a flat 0)
before the first event instead of "No data".
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from streams.judge import GATES
from streams.models import RequestEvent
from streams.settle import SETTLE_REASONS
from streams.syntax import SYNTAX_RESULTS

MODEL_KINDS = ("student", "teacher", "judge", "candidate")
STAGES = ("settle", "sample", "score", "distill", "repair", "retry", "eval")
BAND_NAMES = ("trivial", "ideal", "noise")
RECORD_KINDS = ("sft", "preference")
SPLITS = ("train", "eval")

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

# The metrics, as `register()` creates them (annotated only: nothing exists before then).
EVENTS_IN: Counter
DISCARDED: Counter
DLQ: Counter
OPEN_PREDICTIONS: Gauge
SETTLED: Counter
SETTLE_REPLAYED: Counter
SETTLE_DELAY: Histogram
E2E_LAG: Histogram
MODEL_REQUESTS: Counter
MODEL_RETRIES: Counter
MODEL_LATENCY: Histogram
MODEL_TOKENS: Counter
MODEL_CONCURRENCY_LIMIT: Gauge
MODEL_SHORT_RESPONSES: Counter
MODEL_REQUEUED: Counter
SAMPLE_DISTANCE: Histogram
SAMPLE_REVERSAL: Histogram
BANDS: Counter
REPAIRS: Counter
TRAINING_RECORDS: Counter
REJECTED: Counter
INVALID_SAMPLES: Counter
TARGET_GATE_FAILURES: Counter
SYNTAX_CHECKS: Counter
PREFERENCE_DROPPED: Counter
STAGE_SECONDS: Histogram
STAGE_COMMITS: Counter
CONSUMER_LAG: Gauge
ASSIGNED_PARTITIONS: Gauge
EXAMPLES_IN_FLIGHT: Gauge
EXAMPLES_IN_FLIGHT_PEAK: Gauge
EXAMPLES_IN_FLIGHT_LIMIT: Gauge
EVENT_LOOP_LAG: Histogram
EVAL_RECORDS: Counter
SCORECARD_PREDICTIONS: Counter
SCORECARD_UNDONE: Counter
SCORECARD_DISTANCE: Histogram
SCORECARD_KEPT_RATE: Histogram
SCORECARD_REVERSAL: Histogram

_NAMES = frozenset(__annotations__)  # the metrics' names, as annotated above
_lock = threading.Lock()
_registered = False
_built: dict[str, Any] = {}


def register() -> None:
    """Create and register every metric (once; later calls do nothing).

    The value store is the one the environment names now: with `PROMETHEUS_MULTIPROC_DIR`
    set, values are written to that directory for the host's scraping worker to sum."""
    global _registered
    with _lock:
        if _registered:
            return
        from prometheus_client import values

        # prometheus_client picks its value store when it is first imported; pick it again
        # now, so an import before the directory was set does not keep values in memory only
        values.ValueClass = values.get_value_class()
        _built.update(_build())
        globals().update(_built)
        _initialise(_built)
        _registered = True


def _metrics() -> dict[str, Any]:
    """Every metric by name (registered first if need be)."""
    if not _registered:
        register()
    return _built


def __getattr__(name: str) -> Any:
    """`metrics.X` before `register()`: register, then answer (PEP 562)."""
    if name in _NAMES:
        register()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _build() -> dict[str, Any]:
    from prometheus_client import Counter, Gauge, Histogram

    # --- ingest and settle -------------------------------------------------------------------
    EVENTS_IN = Counter("editstream_events_in_total", "Ingest events by type and result",
                        ["type", "result"])
    DISCARDED = Counter("editstream_privacy_discarded_total",
                        "Events discarded at ingest for privacy", ["reason"])
    DLQ = Counter("editstream_dlq_records_total", "Records sent to a dead-letter topic",
                  ["stage", "reason"])
    OPEN_PREDICTIONS = Gauge("editstream_settle_open_predictions",
                             "Predictions waiting to settle on this worker",
                             multiprocess_mode="livesum")
    SETTLED = Counter("editstream_settled_total", "Settled examples by reason", ["reason"])
    SETTLE_REPLAYED = Counter(
        "editstream_settle_replayed_events_total",
        "Events seen again after a crash whose state had already landed (skipped, not re-applied)")
    SETTLE_DELAY = Histogram("editstream_settle_delay_seconds",
                             "Event time from the last touching edit to settling",
                             buckets=(0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600))
    E2E_LAG = Histogram("editstream_end_to_end_lag_seconds",
                        "Wall time from settling to training record or rejection",
                        buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900))

    # --- model calls -------------------------------------------------------------------------
    MODEL_REQUESTS = Counter("editstream_model_requests_total", "Model HTTP attempts by status",
                             ["kind", "status"])
    MODEL_RETRIES = Counter("editstream_model_retries_total", "Model HTTP retries", ["kind"])
    MODEL_LATENCY = Histogram("editstream_model_request_duration_seconds",
                              "Model HTTP attempt latency", ["kind"],
                              buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60))
    MODEL_TOKENS = Counter("editstream_model_tokens_total", "Tokens used", ["kind", "direction"])
    MODEL_CONCURRENCY_LIMIT = Gauge(
        "editstream_model_concurrency_limit",
        "Requests the model client lets in flight to the endpoint of this role (adaptive: "
        "streams/limiter.py; roles on one server share one limit)", ["kind"],
        multiprocess_mode="livesum")
    MODEL_SHORT_RESPONSES = Counter(
        "editstream_model_short_responses_total",
        "Completions with fewer choices than the n asked (the server ignores or caps n; the "
        "client asked again for the rest)", ["kind"])
    MODEL_REQUEUED = Counter("editstream_model_requeued_total",
                             "Examples re-queued on the retry topic after a model outage",
                             ["stage"])

    # --- data quality ------------------------------------------------------------------------
    SAMPLE_DISTANCE = Histogram("editstream_sample_distance_ratio",
                                "Normalized Levenshtein distance of each student sample",
                                buckets=tuple(i / 20 for i in range(1, 21)))
    SAMPLE_REVERSAL = Histogram("editstream_sample_reversal_ratio",
                                "Reversal ratio of the first score_metrics_samples valid samples "
                                "of each example",
                                buckets=(0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0))
    BANDS = Counter("editstream_scored_examples_total", "Scored examples by band", ["band"])
    REPAIRS = Counter("editstream_repair_attempts_total", "Repair attempts by result",
                      ["result"])
    TRAINING_RECORDS = Counter("editstream_training_records_total", "Training records emitted",
                               ["kind", "split"])
    REJECTED = Counter("editstream_rejected_examples_total", "Examples that left without a record",
                       ["stage", "reason"])
    INVALID_SAMPLES = Counter("editstream_student_samples_invalid_total",
                              "Student samples left out of the band median, by reason",
                              ["reason"])  # truncated | unparsable
    TARGET_GATE_FAILURES = Counter("editstream_target_gate_failures_total",
                                   "Teacher targets failing a gate (streams/judge.py), by gate",
                                   ["gate"])
    SYNTAX_CHECKS = Counter("editstream_target_syntax_checks_total",
                            "Teacher targets by the syntax gate's result (streams/syntax.py): "
                            "ok, breaks_syntax, base_broken (already broken at request time), "
                            "unchecked (no grammar for the language)", ["result"])
    PREFERENCE_DROPPED = Counter("editstream_preference_pairs_dropped_total",
                                 "SFT records without a preference pair, by reason", ["reason"])

    # --- operations --------------------------------------------------------------------------
    STAGE_SECONDS = Histogram("editstream_stage_processing_seconds",
                              "Processing time per record and stage", ["stage"],
                              buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120))
    STAGE_COMMITS = Counter(
        "editstream_stage_commits_total",
        "Writes of the stage runner's finished records with their offsets: transactions "
        "(exactly_once) or acknowledged sends then an offset commit (at_least_once)")
    CONSUMER_LAG = Gauge("editstream_consumer_lag_messages",
                         "Messages behind the log end in the worker's assigned partitions "
                         "(highwater minus committed offset); set by agents/lag.py",
                         ["topic", "partition"], multiprocess_mode="livesum")
    ASSIGNED_PARTITIONS = Gauge("editstream_assigned_partitions",
                                "Source partitions a runner's consumer group has assigned to "
                                "this worker (0 until its group is joined)", ["runner"],
                                multiprocess_mode="livesum")
    EXAMPLES_IN_FLIGHT = Gauge("editstream_examples_in_flight",
                               "Records the stages are working on now (agents/inflight.py)",
                               multiprocess_mode="livesum")
    EXAMPLES_IN_FLIGHT_PEAK = Gauge("editstream_examples_in_flight_peak",
                                    "Most records the stages worked on at once since the "
                                    "worker started", multiprocess_mode="max")
    EXAMPLES_IN_FLIGHT_LIMIT = Gauge("editstream_examples_in_flight_limit",
                                     "max_examples_in_flight: the ceiling of "
                                     "editstream_examples_in_flight", multiprocess_mode="max")
    EVENT_LOOP_LAG = Histogram(
        "editstream_event_loop_lag_seconds",
        "How late the worker's event loop woke a probe sleeping loop_lag_interval_s: the time "
        "some callback held the loop (agents/looplag.py)",
        buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))

    # --- scorecard (issue 24): served models live, candidates in the eval stage ----------------
    EVAL_RECORDS = Counter("editstream_eval_records_total",
                           "eval-results records by candidate (noop, served and the configured "
                           "ones) and result (ok or the failure reason)",
                           ["candidate", "result"])
    # model_version: the busiest `scorecard_versions` served versions, the rest `other`
    # (`VersionLabels`); unknown: a prediction without model_version
    SCORECARD_PREDICTIONS = Counter(
        "editstream_scorecard_predictions_total",
        "Settled predictions with a served output, by served model version and outcome "
        "(accepted, rejected, ignored, discarded, unknown)", ["model_version", "outcome"])
    SCORECARD_UNDONE = Counter(
        "editstream_scorecard_undone_total",
        "Accepted served predictions the user reverted inside the settle window",
        ["model_version"])
    ratio_buckets = tuple(i / 20 for i in range(1, 21))
    SCORECARD_DISTANCE = Histogram(
        "editstream_scorecard_distance_ratio",
        "Normalized Levenshtein distance of the served region to the settled region",
        ["model_version"], buckets=ratio_buckets)
    SCORECARD_KEPT_RATE = Histogram(
        "editstream_scorecard_kept_rate_ratio",
        "Kept rate of the served region's edit in the settled region", ["model_version"],
        buckets=ratio_buckets)
    SCORECARD_REVERSAL = Histogram(
        "editstream_scorecard_reversal_ratio",
        "Reversal ratio of the served region (how much of the user's recent edits it undoes)",
        ["model_version"], buckets=(0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0))
    built = {name: value for name, value in locals().items()
             if isinstance(value, Counter | Gauge | Histogram)}
    if set(built) != _NAMES:  # a metric defined here but not annotated above, or the reverse
        raise RuntimeError(f"metrics not annotated at the top: {set(built) ^ _NAMES}")
    return built


def _initialise(m: dict[str, Any]) -> None:
    """Zero series for the label values known up front (see the module docstring)."""
    for kind in MODEL_KINDS:
        m["MODEL_REQUESTS"].labels(kind, "ok")
        m["MODEL_RETRIES"].labels(kind)
        m["MODEL_LATENCY"].labels(kind)
        m["MODEL_SHORT_RESPONSES"].labels(kind)
        for direction in ("prompt", "completion"):
            m["MODEL_TOKENS"].labels(kind, direction)
    for stage in ("sample", "distill", "repair", "eval"):
        m["MODEL_REQUEUED"].labels(stage)
    for candidate in ("noop", "served"):
        m["EVAL_RECORDS"].labels(candidate, "ok")
    for stage in STAGES:
        m["STAGE_SECONDS"].labels(stage)
    for reason in SETTLE_REASONS:
        m["SETTLED"].labels(reason)
    for band in BAND_NAMES:
        m["BANDS"].labels(band)
    for result in ("repaired", "failed"):
        m["REPAIRS"].labels(result)
    for reason in ("truncated", "unparsable"):
        m["INVALID_SAMPLES"].labels(reason)
    for gate in GATES:
        m["TARGET_GATE_FAILURES"].labels(gate)
    for result in SYNTAX_RESULTS:
        m["SYNTAX_CHECKS"].labels(result)
    for kind in RECORD_KINDS:
        for split in SPLITS:
            m["TRAINING_RECORDS"].labels(kind, split)



def observe_request(ev: RequestEvent) -> None:
    """The model clients' observer hook."""
    m = _metrics()
    m["MODEL_REQUESTS"].labels(ev.kind, ev.status).inc()
    m["MODEL_LATENCY"].labels(ev.kind).observe(ev.latency_s)
    if ev.retry:
        m["MODEL_RETRIES"].labels(ev.kind).inc()
    if ev.prompt_tokens:
        m["MODEL_TOKENS"].labels(ev.kind, "prompt").inc(ev.prompt_tokens)
    if ev.completion_tokens:
        m["MODEL_TOKENS"].labels(ev.kind, "completion").inc(ev.completion_tokens)
    if ev.choices_returned < ev.choices_asked:
        m["MODEL_SHORT_RESPONSES"].labels(ev.kind).inc()


def reason_label(reason: str) -> str:
    """Keep the label set bounded: reasons are snake_case words; anything else is folded."""
    head = reason.split(":", 1)[0]
    return head if head.replace("_", "").isalnum() and len(head) <= 40 else "other"


class VersionLabels:
    """Bounded `model_version` label values: the `top` busiest versions seen so far keep
    their name, the others are `other` (a version that overtakes the quietest named one
    takes its place from then on). A prediction without a version is `unknown`."""

    MAX_TRACKED = 10_000  # versions counted; past it, new ones are `other` at once

    def __init__(self, top: int) -> None:
        self.top = top
        self.counts: dict[str, int] = {}
        self.named: set[str] = set()

    def label(self, version: str | None) -> str:
        if version is None:
            return "unknown"
        if version not in self.counts and len(self.counts) >= self.MAX_TRACKED:
            return "other"
        n = self.counts[version] = self.counts.get(version, 0) + 1
        if version in self.named:
            return version
        if len(self.named) < self.top:
            self.named.add(version)
            return version
        if self.named:
            quietest = min(self.named, key=lambda v: (self.counts[v], v))
            if n > self.counts[quietest]:
                self.named.discard(quietest)
                self.named.add(version)
                return version
        return "other"
