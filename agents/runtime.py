"""What every agent needs: settings, topics, model clients, and the send helpers.

Clients are created lazily inside the worker's event loop (httpx clients bind to the loop
that first uses them) and closed when the worker stops.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import orjson

from agents import metrics
from agents.inflight import InFlight
from agents.models import StudentClient, TeacherClient
from schemas.records import RetryPayload, SettledExample
from streams.emit import dlq_record, rejected_record
from streams.limiter import AdaptiveLimit
from streams.models import Endpoint, ModelError
from streams.retry import retry_record
from streams.settings import Candidate, Settings


def dumps(record: Mapping[str, object]) -> bytes:
    return orjson.dumps(record)


def dead_letter_record(stage: str, reason: str, detail: str | None, topic: str,
                       partition: int, offset: int, raw: bytes, settings: Settings,
                       key: str | None = None) -> tuple[bytes, bytes]:
    """Key and value bytes of a dead letter: the record's original bytes and its source.
    (The caller counts it in `metrics.DLQ` once it is sent.)"""
    rec = dlq_record(stage, reason, detail, topic, partition, offset, raw, settings)
    return (key or f"{topic}:{partition}:{offset}").encode(), dumps(rec)


def observe_lag(example: Mapping[str, Any]) -> None:
    """End-to-end lag: from the moment the example settled (event time) to now."""
    metrics.E2E_LAG.observe(max(0.0, time.time() - example["settled_at_ms"] / 1000))


# One output of a record handled by the stage runner: topic (full name), partition, key,
# value, headers.
Output = tuple[str, int, bytes, bytes, list[tuple[str, bytes]] | None]


@dataclass
class Record:
    """The record the stage runner (agents/stages.py) is handling in the current task: its
    source, and the outputs the handler sends, kept here rather than sent, so that the runner
    writes them together with the record's offset, in offset order."""

    topic: str
    partition: int
    offset: int
    headers: Sequence[tuple[str, bytes]] = ()
    outputs: list[Output] = field(default_factory=list)


CURRENT_RECORD: ContextVar[Record | None] = ContextVar("editstream_record", default=None)


@dataclass
class Runtime:
    settings: Settings
    app: faust.App
    topics: dict[str, faust.types.TopicT] = field(default_factory=dict)
    _student: StudentClient | None = None
    _teacher: TeacherClient | None = None
    _judge: TeacherClient | None = None
    _judge_checked: bool = False
    _limiters: dict[str, AdaptiveLimit] = field(default_factory=dict)
    settle: Any = None  # the settle runner (agents.settle.SettleRunner) once registered
    stages: Any = None  # the stage runner (agents.stages.StageRunner) once registered
    evaluator: Any = None  # the eval stage's runner (agents.evaluate.register), if on
    _candidates: dict[str, StudentClient] = field(default_factory=dict)
    loop_lag: Any = None  # the event-loop lag probe (agents.looplag.LoopLagProbe), if on
    _examples: InFlight | None = None

    @property
    def examples(self) -> InFlight:
        """The worker-wide ceiling on records the stages handle at once."""
        if self._examples is None:
            self._examples = InFlight(self.settings.max_examples_in_flight)
        return self._examples

    def topic(self, name: str) -> faust.types.TopicT:
        return self.topics[name]

    # --- model clients ---------------------------------------------------------------
    def _roles(self) -> list[tuple[str, str, int, float]]:
        """(kind, endpoint key, max in flight, timeout) of every configured model role."""
        s = self.settings
        roles = [("student", s.student_url, s.student_max_in_flight, s.student_timeout_s),
                 ("teacher", s.teacher_url, s.teacher_max_in_flight, s.teacher_timeout_s)]
        if s.judge_url:
            roles.append(("judge", s.judge_url, s.teacher_max_in_flight, s.teacher_timeout_s))
        return [(k, url.rstrip("/").removesuffix("/v1"), m, t) for k, url, m, t in roles]

    def limiter(self, kind: str) -> AdaptiveLimit:
        """The concurrency limit of `kind`'s endpoint: roles served by one URL share one
        (they share the server's slots), its ceiling the largest of their max_in_flight,
        its latency budget the shortest of their timeouts."""
        roles = self._roles()
        key = next(u for k, u, _, _ in roles if k == kind)
        if key not in self._limiters:
            mine = [(k, m, t) for k, u, m, t in roles if u == key]
            sharing = [k for k, _, _ in mine]

            def export(limit: float) -> None:
                for k in sharing:
                    metrics.MODEL_CONCURRENCY_LIMIT.labels(k).set(limit)

            self._limiters[key] = AdaptiveLimit(
                max(m for _, m, _ in mine), adaptive=self.settings.adaptive_concurrency,
                observer=export, latency_budget_s=min(t for _, _, t in mine))
        return self._limiters[key]

    @property
    def student(self) -> StudentClient:
        if self._student is None:
            s = self.settings
            self._student = StudentClient(
                Endpoint(s.student_url, s.student_model, api_key=s.student_api_key or None,
                         timeout_s=s.student_timeout_s, max_retries=s.model_max_retries),
                max_in_flight=s.student_max_in_flight, observer=metrics.observe_request,
                http_transport=s.http_transport, limiter=self.limiter("student"))
        return self._student

    @property
    def teacher(self) -> TeacherClient:
        if self._teacher is None:
            s = self.settings
            self._teacher = TeacherClient(
                Endpoint(s.teacher_url, s.teacher_model, api=s.teacher_api,
                         api_key=s.teacher_api_key or None, timeout_s=s.teacher_timeout_s,
                         max_retries=s.model_max_retries),
                max_in_flight=s.teacher_max_in_flight, observer=metrics.observe_request,
                http_transport=s.http_transport, limiter=self.limiter("teacher"))
        return self._teacher

    @property
    def judge(self) -> TeacherClient | None:
        s = self.settings
        if self._judge is None and s.judge_url:
            self._judge = TeacherClient(
                Endpoint(s.judge_url, s.judge_model, api_key=s.judge_api_key or None,
                         timeout_s=s.teacher_timeout_s, max_retries=s.model_max_retries),
                kind="judge", max_in_flight=s.teacher_max_in_flight,
                observer=metrics.observe_request, http_transport=s.http_transport,
                limiter=self.limiter("judge"))
        return self._judge

    def candidate(self, cand: Candidate) -> StudentClient:
        """The client of an eval candidate: the student's client (adaptive concurrency,
        retries, stop sequences, finish_reason) on the candidate's endpoint, its own limit."""
        client = self._candidates.get(cand.name)
        if client is None:
            s = self.settings
            client = self._candidates[cand.name] = StudentClient(
                Endpoint(cand.url, cand.model, timeout_s=cand.timeout_s,
                         max_retries=s.model_max_retries),
                kind="candidate", max_in_flight=cand.max_in_flight,
                observer=metrics.observe_request, http_transport=s.http_transport,
                limiter=AdaptiveLimit(cand.max_in_flight, adaptive=s.adaptive_concurrency,
                                      latency_budget_s=cand.timeout_s))
        return client

    async def aclose(self) -> None:
        for client in (self._student, self._teacher, self._judge, *self._candidates.values()):
            if client is not None:
                await client.aclose()

    # --- sends -----------------------------------------------------------------------
    async def send(self, topic: str, key: str, record: Mapping[str, object],
                   partition: int | None = None, *,
                   headers: Mapping[str, bytes] | None = None) -> None:
        """Send `record`, by default to the partition number of the record being handled.

        Every topic has the same partition count, so an example stays in its session's
        partition from settle to training record, and the stage runner writes a record's
        outputs in the transaction of its partition number, with the record's offset
        (agents/stages.py). Keys stay the deterministic ids.
        """
        await self.send_bytes(topic, key.encode(), dumps(record), partition, headers=headers)

    async def send_bytes(self, topic: str, key: bytes, value: bytes,
                         partition: int | None = None, *,
                         headers: Mapping[str, bytes] | None = None) -> None:
        """`send` of an encoded record: kept on the record the stage runner is handling
        (`CURRENT_RECORD`) and written with its offset, once every earlier record of its
        partition is done and the broker has acknowledged all of them.

        There is no other way out: a send outside a runner's record would be written
        without its source offset, and nothing would check that it arrived. That is how
        the retry stage lost examples while it ran on Faust (RELIABILITY.md)."""
        rec = CURRENT_RECORD.get()
        if rec is None:
            raise RuntimeError(f"a send to {topic} outside a stage runner's record")
        rec.outputs.append((self.settings.topic(topic),
                            rec.partition if partition is None else partition, key, value,
                            list(headers.items()) if headers else None))

    async def reject(self, stage: str, reason: str, example: SettledExample,
                     **extra: Any) -> None:
        metrics.REJECTED.labels(stage, metrics.reason_label(reason)).inc()
        observe_lag(example)
        await self.send("rejected-examples", example["request_id"],
                        rejected_record(example["request_id"], stage, reason, self.settings,
                                        example=example, **extra))

    async def requeue(self, stage: str, payload: RetryPayload, exc: ModelError,
                      attempt: int, **reject_extra: Any) -> None:
        """After a model outage: re-queue with a delay, or reject once retries are spent."""
        record = retry_record(stage, payload, f"{exc.reason}", attempt + 1,
                              int(time.time() * 1000), self.settings)
        if record is not None:
            metrics.MODEL_REQUEUED.labels(stage).inc()
            await self.send("model-retry", payload["request_id"], record)
            return
        model = "student" if stage == "sample" else "teacher"
        # a scored or repair record carries its example; a settled example is one
        await self.reject(stage, f"{model}_{exc.reason}",
                          cast(SettledExample, payload.get("example", payload)),
                          detail=str(exc)[:300], **reject_extra)

    async def dead_letter(self, dlq_topic: str, stage: str, reason: str, detail: str | None,
                          message: Any, *, original: bytes | None = None,
                          key: str | None = None) -> None:
        """Keep a record a stage could not process, with its original bytes and source."""
        metrics.DLQ.labels(stage, metrics.reason_label(reason)).inc()
        raw = message.value or b"" if original is None else original
        key_bytes, value = dead_letter_record(stage, reason, detail, message.topic,
                                              message.partition, message.offset, raw,
                                              self.settings, key)
        await self.send_bytes(dlq_topic, key_bytes, value)


# On a `scored-examples` record: the score stage has written its rejection, if any.
ROUTED_HEADER = "editstream-routed-by"


def current_header(name: str) -> bytes | None:
    """A header of the record being handled (`None` outside a stage or when absent)."""
    rec = CURRENT_RECORD.get()
    if rec is None or not rec.headers:
        return None
    for key, value in rec.headers:
        if key == name:
            return bytes(value) if value is not None else b""
    return None
