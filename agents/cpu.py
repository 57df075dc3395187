"""CPU-heavy stage work off the event loop: a process pool sized by ``cpu_processes``.

A call that holds the loop for tens of milliseconds stalls every other stage of the worker
and its Kafka heartbeats (agents/looplag.py measures it). Functions sent here take and return
plain data (bytes, dicts), so one process pickles little; ``cpu_processes=0`` runs them on
the loop (tests, or a machine where the extra process costs more than it saves).
Processes are spawned, not forked: the worker has threads (aiokafka, prometheus) by then.

A pool process ends with its worker, however the worker ends. A worker killed with -9 never
shuts its pool down, and a pool process waiting for work never sees its queue close (it
holds both ends of the pipe itself), so it used to live on with parent 1, ~60 MB each, one
pool per crash under a supervisor that restarts workers. Each process now watches its
parent from a thread of its own and exits within `PARENT_POLL_S` of the worker's end. (Not
Linux's `PR_SET_PDEATHSIG`: it fires when the *thread* that spawned the process ends, which
would kill a healthy pool spawned from a short-lived thread.)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
PARENT_POLL_S = 0.5


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)


def exit_with_parent(parent: int) -> None:
    """Initializer of a pool process: end it when `parent` (the worker) ends."""
    if os.getppid() != parent:  # the worker died while this process started
        os._exit(0)
    threading.Thread(target=_watch_parent, args=(parent,), name="exit-with-parent",
                     daemon=True).start()


class CpuPool:
    def __init__(self, processes: int) -> None:
        self.processes = max(0, processes)
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.processes == 0:
            return fn(*args)
        if self._pool is None:  # lazily: a worker that never scores starts no process
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=exit_with_parent, initargs=(os.getpid(),))
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
