"""Loaded by a worker started with ``PYTHONPATH=...:bench/loop_trace`` and
``EDITSTREAM_LOOP_TRACE=1`` (bench/bench_loop_blockers.py): logs every event-loop callback
that held the loop longer than 20 ms, with the main thread's CPU time in it (wall time far
above CPU time is the OS giving the core to another process, not work on the loop), and
every garbage-collector pass longer than 5 ms. Lines go to stderr (the worker's log)."""

from __future__ import annotations

import asyncio.events
import gc
import os
import sys
import time
from typing import Any

if os.environ.get("EDITSTREAM_LOOP_TRACE") == "1":
    _run = asyncio.events.Handle._run

    def _name(handle: asyncio.events.Handle) -> str:
        cb = handle._callback  # type: ignore[attr-defined]
        owner = getattr(cb, "__self__", None)
        if not hasattr(owner, "get_coro"):
            return str(getattr(cb, "__qualname__", repr(cb)))
        coro = owner.get_coro()  # type: ignore[union-attr]
        name = str(getattr(coro, "__qualname__", coro))
        frame = getattr(coro, "cr_frame", None)
        agent = frame.f_locals.get("self") if frame is not None else None
        return f"{name}:{agent.name}" if hasattr(agent, "name") else name

    def _timed(self: asyncio.events.Handle) -> None:
        wall, cpu = time.perf_counter(), time.thread_time()
        _run(self)
        wall = time.perf_counter() - wall
        if wall > 0.02:
            cpu = time.thread_time() - cpu
            sys.stderr.write(f"LOOPTRACE callback wall_ms={wall * 1000:.1f} "
                             f"cpu_ms={cpu * 1000:.1f} {_name(self)}\n")

    asyncio.events.Handle._run = _timed  # type: ignore[method-assign]
    _gc_started = [0.0]

    def _gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _gc_started[0] = time.perf_counter()
            return
        took = time.perf_counter() - _gc_started[0]
        if took > 0.005:
            sys.stderr.write(f"LOOPTRACE gc gen={info['generation']} wall_ms={took * 1000:.1f} "
                             f"pid={os.getpid()}\n")

    gc.callbacks.append(_gc)
