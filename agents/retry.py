"""Retry agent: examples re-queued after a model outage go back to their stage when due.

Waiting happens here, in its own agent with its own concurrency, so an outage never stalls
the stages that are still able to work.
"""

from __future__ import annotations

import asyncio
import time

import faust
import orjson

from agents import metrics
from agents.distill import teach
from agents.runtime import Runtime
from agents.sample import sample_one

MAX_WAIT_S = 300.0


def register(app: faust.App, rt: Runtime) -> None:
    @app.agent(rt.topic("model-retry"), name="model-retry",
               concurrency=rt.settings.distill_concurrency)
    async def retry(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            started = time.perf_counter()
            try:
                rec = orjson.loads(msg.value)
                wait = rec["not_before_ms"] / 1000 - time.time()
                if wait > 0:
                    await asyncio.sleep(min(wait, MAX_WAIT_S))
                payload, attempt = rec["payload"], int(rec["attempt"])
                if rec["stage"] == "sample":
                    await sample_one(rt, payload, attempt)
                else:
                    number = int(payload.get("attempt", 0)) if rec["stage"] == "repair" else 0
                    await teach(rt, payload, number, attempt)
            except Exception as exc:
                await rt.dead_letter("pipeline-dlq", "retry", "internal_error",
                                     type(exc).__name__, msg)
            finally:
                metrics.STAGE_SECONDS.labels("retry").observe(time.perf_counter() - started)
