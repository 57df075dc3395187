"""Score agent: student samples → per-sample scores, distribution summary and band."""

from __future__ import annotations

import time
from typing import Any

import faust
import orjson

from agents import metrics
from agents.cpu import CpuPool
from agents.runtime import Runtime
from streams.score import score_example
from streams.settings import Settings


def score_bytes(value: bytes, settings: Settings) -> dict[str, Any]:
    """Decode and score one `student-samples` record (runs in the CPU pool)."""
    return score_example(orjson.loads(value), settings)


def register(app: faust.App, rt: Runtime) -> None:
    pool = CpuPool(rt.settings.cpu_processes)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's stubs: sync receivers only
    async def close_pool(app: faust.App, **kwargs: object) -> None:
        pool.close()

    @app.agent(rt.topic("student-samples"), name="score")
    async def score(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            started = time.perf_counter()
            try:
                scored = await pool.run(score_bytes, msg.value, rt.settings)
                for sc in scored["scores"]:
                    if sc.get("invalid"):  # truncated / unparsable: counted, not scored
                        metrics.INVALID_SAMPLES.labels(sc["invalid"]).inc()
                        continue
                    metrics.SAMPLE_DISTANCE.observe(sc["distance"])
                    if "reversal_ratio" in sc:  # the first score_metrics_samples only
                        metrics.SAMPLE_REVERSAL.observe(sc["reversal_ratio"])
                metrics.BANDS.labels(scored["band"]).inc()
                await rt.send("scored-examples", scored["request_id"], scored)
            except Exception as exc:
                await rt.dead_letter("pipeline-dlq", "score", "internal_error",
                                     type(exc).__name__, msg)
            finally:
                metrics.STAGE_SECONDS.labels("score").observe(time.perf_counter() - started)
