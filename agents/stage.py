"""The one loop every Faust stage runs: decode → handle → send, with dead letters and stage
metrics.

A stage is a handler of one decoded record; it sends its results itself (`rt.send`,
`rt.reject`, `rt.requeue`), since a stage may send nothing, one record or several. What the
loop owns, so no agent repeats it:

- decoding the message value (JSON by default; `decode` changes it, e.g. `raw` when the
  handler decodes in a worker process);
- a record whose handling raises is kept in `pipeline-dlq` with reason `internal_error` and
  the exception's type (never its message: it may quote the record), and counted;
- the time each record takes, in `editstream_stage_seconds{stage}`, dead letters included;
- a slot of the worker's `max_examples_in_flight` while a record is handled
  (agents/inflight.py; `bounded=False` for a stage that takes it itself).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import faust
import orjson

from agents import metrics
from agents.runtime import Runtime

T = TypeVar("T")


def raw(value: bytes) -> bytes:
    """The `decode` of a handler that takes the message bytes as they are."""
    return value


async def run_stage(rt: Runtime, stream: faust.StreamT, stage: str,
                    handle: Callable[[T], Awaitable[None]],
                    decode: Callable[[bytes], T], bounded: bool = True) -> None:
    """Handle every message of `stream`; `stage` labels its dead letters and metrics."""
    async for event in stream.events():
        msg = event.message
        started = time.perf_counter()
        try:
            if bounded:
                async with rt.examples.slot():
                    await handle(decode(msg.value))
            else:
                await handle(decode(msg.value))
        except Exception as exc:
            await rt.dead_letter("pipeline-dlq", stage, "internal_error",
                                 type(exc).__name__, msg)
        finally:
            metrics.STAGE_SECONDS.labels(stage).observe(time.perf_counter() - started)


def register_stage(app: faust.App, rt: Runtime, *, source: str, name: str,
                   handle: Callable[[Any], Awaitable[None]], concurrency: int = 1,
                   stage: str | None = None,
                   decode: Callable[[bytes], Any] = orjson.loads,
                   bounded: bool = True) -> None:
    """A Faust agent `name` on topic `source` running `handle` in the stage loop; `stage`
    (default: `name`) is the label of its dead letters and metrics."""

    @app.agent(rt.topic(source), name=name, concurrency=concurrency)
    async def agent(stream: faust.StreamT) -> None:
        await run_stage(rt, stream, stage or name, handle, decode, bounded)
