"""Repair agent: a teacher answer judged bad is retried with the judgement as feedback."""

from __future__ import annotations

import time

import faust
import orjson

from agents import metrics
from agents.distill import teach
from agents.runtime import Runtime


def register(app: faust.App, rt: Runtime) -> None:
    s = rt.settings

    @app.agent(rt.topic("repair"), name="repair", concurrency=s.distill_concurrency)
    async def repair(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            started = time.perf_counter()
            try:
                request = orjson.loads(msg.value)
                await teach(rt, request, int(request["attempt"]))
            except Exception as exc:
                await rt.dead_letter("pipeline-dlq", "repair", "internal_error",
                                     type(exc).__name__, msg)
            finally:
                metrics.STAGE_SECONDS.labels("repair").observe(time.perf_counter() - started)
