"""The event-loop lag probe sees a callback that holds the loop, and the CPU pool scores a
record in another process exactly as the loop would."""

from __future__ import annotations

import asyncio
import os
import time

import orjson

from agents.cpu import CpuPool
from agents.looplag import LoopLagProbe
from agents.score import score_bytes
from streams.settings import Settings


async def test_probe_measures_a_blocking_call() -> None:
    probe = LoopLagProbe(0.01)
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(0.05)
    quiet = max(probe.recent)
    time.sleep(0.12)  # CPU work on the loop, as a synchronous scoring call would be
    await asyncio.sleep(0.05)
    task.cancel()
    assert max(probe.recent) >= 0.1 > quiet


def _record() -> bytes:
    base, settled = "x = 1\ny = 2\n", "x = 10\ny = 2\n"
    example = {"request_id": "r", "path": "a.py", "history": [], "base_region": base,
               "settled_region": settled}
    return orjson.dumps({"request_id": "r", "example": example,
                         "student": {"prompt_format": "fim"},
                         "samples": [settled, base, "x = 11\ny = 2\n", settled]})


def _pid() -> int:
    return os.getpid()


async def test_pool_scores_in_another_process_as_the_loop_does() -> None:
    settings = Settings()
    inline = await CpuPool(0).run(score_bytes, _record(), settings)
    pool = CpuPool(1)
    try:
        assert await pool.run(_pid) != os.getpid()
        assert await pool.run(score_bytes, _record(), settings) == inline
    finally:
        pool.close()
    assert inline["summary"]["n_metrics"] == 2 and inline["summary"]["n"] == 4
