"""Distill agent: ideal examples → teacher → judge → training records, repair, or rejection.

The step (`teach`) is shared with the repair agent: a first attempt comes from
`scored-examples`, a retry with the judgement from `repair`.
"""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from agents import metrics
from agents.runtime import Runtime, observe_lag
from streams.distill import attempt, route_scored
from streams.emit import training_records
from streams.models import ModelError
from streams.repair import next_step, repair_request


async def teach(rt: Runtime, source: dict[str, Any], number: int,
                retry_attempt: int = 0) -> None:
    """Attempt `number` (0 = first distillation) for a scored or repair record;
    `retry_attempt` counts re-queues after model outages."""
    s = rt.settings
    stage = "distill" if number == 0 else "repair"
    example = source["example"]
    try:
        att = await attempt(example, rt.teacher, rt.judge, s, number=number,
                            previous=source.get("previous"), judgement=source.get("judgement"))
    except ModelError as exc:
        await rt.requeue(stage, source, exc, retry_attempt, band=source["band"],
                         summary=source["summary"])
        return
    step = next_step(number, att.judgement, s)
    if number > 0:
        metrics.REPAIRS.labels("repaired" if step == "emit" else "failed").inc()
    if step == "emit":
        assert att.region is not None
        for rec in training_records(source, att.region, att.judgement, s, attempts=number):
            metrics.TRAINING_RECORDS.labels(rec["format"], rec["split"]).inc()
            await rt.send("training-records", rec["id"], rec)
        observe_lag(example)
    elif step == "repair":
        await rt.send("repair", example["request_id"],
                      repair_request(source, att, number + 1, s))
    else:
        await rt.reject(stage, "repair_exhausted" if number else "judged_bad", example,
                        detail=",".join(att.judgement["reasons"]), band=source["band"],
                        summary=source["summary"], judgement=att.judgement)


def register(app: faust.App, rt: Runtime) -> None:
    s = rt.settings

    @app.agent(rt.topic("scored-examples"), name="distill", concurrency=s.distill_concurrency)
    async def distill(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            started = time.perf_counter()
            try:
                scored = orjson.loads(msg.value)
                reason = route_scored(scored)
                if reason is not None:
                    await rt.reject("score", reason, scored["example"], band=scored["band"],
                                    summary=scored["summary"])
                else:
                    await teach(rt, scored, 0)
            except Exception as exc:
                await rt.dead_letter("pipeline-dlq", "distill", "internal_error",
                                     type(exc).__name__, msg)
            finally:
                metrics.STAGE_SECONDS.labels("distill").observe(time.perf_counter() - started)
