"""One worker-wide ceiling on the examples the stages work on at once.

Each stage has its own concurrency (`sample_concurrency`, `distill_concurrency`, ...); this
bounds their sum by `max_examples_in_flight`, so the examples a worker holds while a model is
slow (each with its prompt, samples and scores) stay a configured number, however the stage
settings add up. A record waits for a slot before its handler runs and gives it back when the
handler returns. An example waiting in `model-retry` for its delay holds no slot: the retry
stage takes one only once the example is due (agents/retry.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from agents import metrics


class InFlight:
    """A counting semaphore that reports how many slots are taken, and the most ever taken."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.taken = 0
        self.peak = 0
        self._sem = asyncio.Semaphore(limit)
        metrics.EXAMPLES_IN_FLIGHT_LIMIT.set(limit)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._sem:
            self.taken += 1
            self.peak = max(self.peak, self.taken)
            metrics.EXAMPLES_IN_FLIGHT.set(self.taken)
            metrics.EXAMPLES_IN_FLIGHT_PEAK.set(self.peak)
            try:
                yield
            finally:
                self.taken -= 1
                metrics.EXAMPLES_IN_FLIGHT.set(self.taken)
