"""Eval stage: settled example → one `eval-results` record per candidate (`noop`, `served`
and every configured endpoint), scored by the pure core (streams/evaluate.py).

It runs on its own `StageRunner` (agents/stages.py: per-partition in-order commits, one
transaction per flush under exactly_once) with its own consumer group, `<app_id>-eval`
(`schemas.topics.eval_group`), on `settled-examples`: a slow or dead candidate holds back
only this group, never the training stages, and `editstream replay --eval-only` runs it
alone (`eval_only`). It takes no slot of `max_examples_in_flight` (the training stages'
ceiling): its own is `eval_concurrency` examples at once.

Candidates are asked concurrently, each through its own `StudentClient` (the student's:
adaptive concurrency per endpoint, retries with backoff, stop sequences, `finish_reason`).
A candidate whose call still fails is waited out as sampling waits out an outage
(`retry_attempts` more tries, `retry_delay_ms` doubling each time: streams/retry.py), in
place rather than through `model-retry` (an eval record waits for nothing else, and the
example's records are written together); then it gets a failed record with its reason and
the others' records go on. An example's records are written together, with its offset.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import orjson

import schemas
from agents import metrics
from agents.runtime import Runtime
from agents.stages import Stage, StageRunner
from schemas.records import EvalRecord, SettledExample
from schemas.topics import eval_group
from streams.evaluate import (
    candidate_record,
    error_failure,
    failed_record,
    noop_record,
    selected,
    served_record,
)
from streams.models import ModelError
from streams.retry import delay_ms
from streams.route import settle_rejection
from streams.settings import Candidate, candidate_list


async def ask(rt: Runtime, example: SettledExample, cand: Candidate) -> EvalRecord:
    """`cand`'s record on `example`: its scored prediction, or its failure once outages
    are waited out."""
    s = rt.settings
    attempt = 0
    while True:
        try:
            return await candidate_record(example, cand, rt.candidate(cand), s)
        except ModelError as exc:
            if attempt >= s.retry_attempts:
                return failed_record(example, cand, error_failure(exc), s)
            attempt += 1
            metrics.MODEL_REQUEUED.labels("eval").inc()
            await asyncio.sleep(delay_ms(attempt, s) / 1000)


def is_example(value: Any) -> bool:
    """Whether `value` has the fields of a settled example. One that does not is the
    training stages' to dead-letter (their group reads the same record and keeps it in
    `pipeline-dlq`); here it is only counted, not kept a second time."""
    return isinstance(value, dict) and all(key in value for key in REQUIRED)


REQUIRED = tuple(schemas.load("settled-examples")["required"])


async def evaluate_one(rt: Runtime, example: SettledExample,
                       candidates: list[Candidate]) -> None:
    """Every candidate's record on `example`, if it is one the stage evaluates."""
    s = rt.settings
    if not is_example(example):
        metrics.EVAL_RECORDS.labels("-", "invalid_example").inc()
        return
    if settle_rejection(example, s) is not None or not selected(example, s):
        return  # (a rejected one is a backlog record of an older version: not scored)
    asked = await asyncio.gather(*(ask(rt, example, c) for c in candidates))
    rid = example["request_id"]
    for record in (noop_record(example, s), served_record(example, s), *asked):
        failure = record["failure"]
        metrics.EVAL_RECORDS.labels(record["candidate"], "ok" if failure is None else
                                    metrics.reason_label(failure["reason"])).inc()
        await rt.send("eval-results", rid, record)


def eval_runner(rt: Runtime) -> StageRunner:
    """The eval stage's runner (not started)."""
    s = rt.settings
    candidates = candidate_list(s)

    async def handle(value: Any) -> None:
        await evaluate_one(rt, cast(SettledExample, value), candidates)

    stage = Stage("eval", s.topic("settled-examples"), handle, orjson.loads,
                  s.eval_concurrency, bounded=False)
    return StageRunner(rt, [stage], group_id=eval_group(s), name="eval")


def register(app: Any, rt: Runtime) -> StageRunner:
    """Create the eval stage's runner and have the app start and stop it."""
    runner = eval_runner(rt)
    rt.evaluator = runner
    app.service(runner)
    return runner
