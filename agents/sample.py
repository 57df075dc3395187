"""Sample agent: settled example → N student samples (or a rejection)."""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from agents import metrics
from agents.runtime import Runtime
from streams.models import ModelError
from streams.sample import sample_example


async def sample_one(rt: Runtime, example: dict[str, Any], retry_attempt: int = 0) -> None:
    """Sample one settled example; `retry_attempt` counts re-queues after model outages."""
    s = rt.settings
    if example["settle_reason"] in s.reject_settle_reasons:
        await rt.reject("settle", f"settle_{example['settle_reason']}", example)
        return
    try:
        record = await sample_example(example, rt.student, s)
    except ModelError as exc:
        await rt.requeue("sample", example, exc, retry_attempt)
        return
    await rt.send("student-samples", example["request_id"], record)


def register(app: faust.App, rt: Runtime) -> None:
    s = rt.settings

    @app.agent(rt.topic("settled-examples"), name="sample", concurrency=s.sample_concurrency)
    async def sample(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            started = time.perf_counter()
            try:
                await sample_one(rt, orjson.loads(msg.value))
            except Exception as exc:
                await rt.dead_letter("pipeline-dlq", "sample", "internal_error",
                                     type(exc).__name__, msg)
            finally:
                metrics.STAGE_SECONDS.labels("sample").observe(time.perf_counter() - started)
