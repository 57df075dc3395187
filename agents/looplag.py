"""Event-loop lag probe: how long CPU work held the worker's event loop.

A task sleeps ``loop_lag_interval_s`` again and again; how much later than asked it wakes is
the time some callback kept the loop (scoring, JSON, a slow client). While the loop is held
the settle runner, the model clients and the Kafka heartbeats all wait, so the project's rule
is no more than 20 ms; `editstream_event_loop_lag_seconds` and the alert
`EditstreamEventLoopLag` (deploy/prometheus/alerts.yml) watch it. The last lags are also kept
in memory (`LoopLagProbe.recent`) for the end-to-end bench's p99 and max.

The collector's full passes were one such holder: a generation-2 collection walks every
tracked object, and the worker's start-up heap (faust, aiokafka, the compiled schemas: a few
hundred thousand objects that live as long as the process) made each take 20-60 ms. Once the
worker runs, `freeze_start_up_heap` moves that heap out of the collector's reach
(`gc.freeze`); objects created later are collected as before. It runs twice: before the loop
starts (`editstream.worker.before_loop`, the import-time heap: the costly pass) and once the
worker's services are up (only what their start added is walked then).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc

import faust

from agents import metrics
from agents.runtime import Runtime


class LoopLagProbe:
    def __init__(self, interval_s: float, keep: int = 100_000) -> None:
        self.interval_s = interval_s
        self.recent: collections.deque[float] = collections.deque(maxlen=keep)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            asked = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, loop.time() - asked)
            self.recent.append(lag)
            metrics.EVENT_LOOP_LAG.observe(lag)


def freeze_start_up_heap() -> None:
    """Collect once, then exempt every object alive now from later collections (see the
    module docstring). Objects frozen here are still freed by reference counting."""
    gc.collect()
    gc.freeze()


def register(app: faust.App, rt: Runtime) -> LoopLagProbe | None:
    @app.task
    async def freeze_heap() -> None:  # once, when the worker's services are up
        freeze_start_up_heap()

    if rt.settings.loop_lag_interval_s <= 0:
        return None
    probe = LoopLagProbe(rt.settings.loop_lag_interval_s)

    @app.task
    async def loop_lag() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await probe.run()

    return probe
