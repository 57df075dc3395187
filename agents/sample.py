"""Sample agent: settled example → N student samples (or a rejection)."""

from __future__ import annotations

import time

import faust
import orjson
from streams.models import ModelError

from agents import metrics
from agents.runtime import Runtime
from streams.sample import sample_example


def register(app: faust.App, rt: Runtime) -> None:
    s = rt.settings

    @app.agent(rt.topic("settled-examples"), name="sample", concurrency=s.sample_concurrency)
    async def sample(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            started = time.perf_counter()
            try:
                example = orjson.loads(msg.value)
                if example["settle_reason"] in s.reject_settle_reasons:
                    await rt.reject("settle", f"settle_{example['settle_reason']}", example)
                    continue
                try:
                    record = await sample_example(example, rt.student, s)
                except ModelError as exc:
                    await rt.reject("sample", f"student_{exc.reason}", example,
                                    detail=str(exc)[:300])
                    continue
                await rt.send("student-samples", example["request_id"], record)
            except Exception as exc:
                await rt.dead_letter("pipeline-dlq", "sample", "internal_error",
                                     type(exc).__name__, msg)
            finally:
                metrics.STAGE_SECONDS.labels("sample").observe(time.perf_counter() - started)
