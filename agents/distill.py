"""Distill stage (run by agents/stages.py): ideal examples → teacher → judge → training
records, repair, or rejection.

The step (`teach`) is shared with the repair stage: a first attempt comes from
`scored-examples`, a retry with the judgement from `repair`. The score stage has already
written the rejection of every scored example that is not this stage's (`streams.route`).
"""

from __future__ import annotations

from typing import cast

from agents import metrics
from agents.runtime import ROUTED_HEADER, Runtime, current_header, observe_lag
from schemas.records import Judgement, RepairRequest, ScoredExample
from streams.distill import attempt, student_median
from streams.emit import training_records
from streams.models import ModelError
from streams.repair import repair_request
from streams.route import next_step, rejection_after, route_scored, to_distill


async def teach(rt: Runtime, source: ScoredExample | RepairRequest, number: int,
                retry_attempt: int = 0) -> None:
    """Attempt `number` (0 = first distillation) for a scored or repair record;
    `retry_attempt` counts re-queues after model outages."""
    s = rt.settings
    stage = "distill" if number == 0 else "repair"
    example = source["example"]
    try:
        att = await attempt(example, rt.teacher, rt.judge, s, number=number,
                            # a repair record's (a scored example has neither)
                            previous=cast(str | None, source.get("previous")),
                            judgement=cast(Judgement | None, source.get("judgement")),
                            median=student_median(source))
    except ModelError as exc:
        await rt.requeue(stage, source, exc, retry_attempt, band=source["band"],
                         summary=source["summary"])
        return
    step = next_step(number, att.judgement, s)
    for gate in att.judgement["reasons"]:
        metrics.TARGET_GATE_FAILURES.labels(gate).inc()
    if "syntax" in att.judgement:
        metrics.SYNTAX_CHECKS.labels(att.judgement["syntax"]).inc()
    if number > 0:
        metrics.REPAIRS.labels("repaired" if step == "emit" else "failed").inc()
    if step == "emit":
        assert att.region is not None
        await emit(rt, source, att.region, att.judgement, number)
        observe_lag(example)
    elif step == "repair":
        await rt.send("repair", example["request_id"],
                      repair_request(source, att, number + 1, s))
    else:
        await rt.reject(stage, rejection_after(number), example,
                        detail=",".join(att.judgement["reasons"]), band=source["band"],
                        summary=source["summary"], judgement=att.judgement)


async def emit(rt: Runtime, source: ScoredExample | RepairRequest, region: str,
               judgement: Judgement, attempts: int) -> None:
    records = training_records(source, region, judgement, rt.settings, attempts=attempts)
    for rec in records:
        metrics.TRAINING_RECORDS.labels(rec["format"], rec["split"]).inc()
        if rec.get("preference_dropped"):
            metrics.PREFERENCE_DROPPED.labels(rec["preference_dropped"]).inc()
        await rt.send("training-records", rec["id"], rec)


# The no-op target passes every gate by construction: nothing to undo, nothing added.
NOOP_JUDGEMENT: Judgement = {"ok": True, "reasons": [], "parse_ok": True, "distance": 0.0,
                  "reversal_ratio": 0.0, "kept_rate": None, "noop": True}


async def distill_one(rt: Runtime, scored: ScoredExample) -> None:
    """A scored example: the no-edit answer or a first attempt (any other was rejected by
    the score stage, or is rejected here if it was scored before that stage did so)."""
    route = route_scored(scored, rt.settings)
    if not to_distill(route):
        if current_header(ROUTED_HEADER) is None:  # scored by a version before the move
            assert route is not None
            await rt.reject("score", route, scored["example"], band=scored["band"],
                            summary=scored["summary"])
        return
    if route == "noop":  # the user changed nothing: the no-edit answer
        example = scored["example"]
        await emit(rt, scored, example["base_region"], NOOP_JUDGEMENT, 0)
        observe_lag(example)
    else:
        await teach(rt, scored, 0)
