"""CPU-heavy stage work off the event loop: a process pool sized by ``cpu_processes``.

A call that holds the loop for tens of milliseconds stalls every other stage of the worker
and its Kafka heartbeats (agents/looplag.py measures it). Functions sent here take and return
plain data (bytes, dicts), so one process pickles little; ``cpu_processes=0`` runs them on
the loop (tests, or a machine where the extra process costs more than it saves).
Processes are spawned, not forked: the worker has threads (aiokafka, prometheus) by then.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class CpuPool:
    def __init__(self, processes: int) -> None:
        self.processes = max(0, processes)
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.processes == 0:
            return fn(*args)
        if self._pool is None:  # lazily: a worker that never scores starts no process
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"))
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
