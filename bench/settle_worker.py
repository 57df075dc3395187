"""A Faust worker that runs only the settle stage, instrumented for bench/bench_settle.py.

The app is the production one (``agents.app.create_app``: same Faust options, table, timers);
every agent but ``settle`` is removed before the worker starts, so downstream stages cost
nothing. ``agents.settle._handle`` (the per-message work) is wrapped to time the stream from
the first message to the ``BENCH_EXPECTED``-th, then the producer is flushed (changelog and
settled-examples acknowledged) and the figures are written to ``BENCH_RESULT`` as JSON.
``BENCH_PROFILE``: also write a pyinstrument text profile of that window to this path.
``BENCH_RECOVERY=<watermark_ms>``: also report when the table recovery completed, counted
from ``BENCH_SPAWNED`` (the state bench restarts a worker on a big changelog), and the RSS;
once recovered, the worker writes one control tick (that watermark) per partition itself.
``BENCH_FIXES``: comma-separated prototype fixes for files the bench does not own
(``spinner``, ``linger``, ``lazywm``) and probes (``noop``: Faust alone; ``dictstore``: settle
without the changelog; ``takenoop``: Faust alone, consuming with ``stream.take``).

Run by the bench as ``python -m bench.settle_worker`` with ``EDITSTREAM_*`` settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust

import agents.settle as settle_agent
from agents.app import create_app
from streams.settings import from_env
from streams.settle import WATERMARK_KEY


class LazyWatermarkStore(settle_agent.PartitionStore):
    """Prototype: the watermark (rewritten by nearly every event) is kept in memory and
    written to the table with the partition's next other write, not on its own."""

    def __init__(self, table: faust.Table, partition: int) -> None:
        super().__init__(table, partition)
        self._watermark: Any = None

    def __getitem__(self, key: str) -> Any:
        if key == WATERMARK_KEY and self._watermark is not None:
            return self._watermark
        return super().__getitem__(key)

    def _flush(self) -> None:
        if self._watermark is not None:
            super().__setitem__(WATERMARK_KEY, self._watermark)
            self._watermark = None

    def __setitem__(self, key: str, value: Any) -> None:
        if key == WATERMARK_KEY:
            self._watermark = value
            return
        self._flush()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._flush()
        super().__delitem__(key)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    settings = from_env()
    expected = int(os.environ.get("BENCH_EXPECTED", "0"))
    result = Path(os.environ["BENCH_RESULT"])
    profile_to = os.environ.get("BENCH_PROFILE")
    # prototype fixes for files the bench does not own (see BENCHMARKS.md), comma-separated
    fixes = set(filter(None, os.environ.get("BENCH_FIXES", "").split(",")))
    app, rt = create_app(settings)
    if "linger" in fixes:
        # batch the changelog / output sends: faust's default linger of 0 sends a produce
        # request per message whenever the sender is idle
        app.conf.producer_linger = 0.005
    for name in list(app.agents):
        if name.rsplit(".", 1)[-1] != "settle":
            del app.agents[name]  # not started: their topics are never subscribed
    spawned = float(os.environ.get("BENCH_SPAWNED", time.time()))

    original = settle_agent._handle
    state: dict[str, Any] = {"n": 0, "t0": 0.0, "cpu0": 0.0, "profiler": None}

    async def timed(rt: Any, st: Any, msg: Any) -> None:
        if state["n"] == 0:
            state["first_event_after_spawn_s"] = time.time() - spawned
            state["debug_logging"] = sorted(  # loggers that format DEBUG records (costly)
                name for name in ("", "aiokafka", "faust", "mode", "agents")
                if logging.getLogger(name).isEnabledFor(logging.DEBUG))
            if profile_to:
                from pyinstrument import Profiler

                state["profiler"] = Profiler(async_mode="disabled")
                state["profiler"].start()
            state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
        try:
            if not fixes & {"noop", "takenoop"}:  # noop: the Faust floor alone
                await original(rt, st, msg)
        finally:
            state["n"] += 1
        if state["n"] == expected:
            # never wait for anything else here: a rebalance waits for the agent's event
            await app.producer.flush()  # everything sent is acknowledged, as in the baseline
            elapsed = time.perf_counter() - state["t0"]
            cpu = time.process_time() - state["cpu0"]
            if state["profiler"] is not None:
                state["profiler"].stop()
                prof = state["profiler"]
                show_all = os.environ.get("BENCH_PROFILE_ALL") == "1"
                Path(profile_to or "").write_text(
                    prof.output_text(unicode=False, color=False, show_all=show_all)
                    + "\n\n" + prof.output_text(unicode=False, color=False, flat=True))
            state["figures"] = {"events": state["n"], "elapsed_s": elapsed, "cpu_s": cpu,
                                "events_per_s": state["n"] / elapsed,
                                "first_event_after_spawn_s": state["first_event_after_spawn_s"],
                                "debug_logging": state["debug_logging"],
                                "rss_bytes": rss_bytes()}
            if not os.environ.get("BENCH_RECOVERY"):
                result.write_text(json.dumps(state["figures"]))

    settle_agent._handle = timed
    if "takenoop" in fixes:
        # the Faust floor when an agent takes batches (stream.take) instead of one event
        del app.agents[next(n for n in app.agents if n.rsplit(".", 1)[-1] == "settle")]

        @app.agent(rt.topic("edit-events"), name="settle-take")
        async def take(stream: faust.StreamT) -> None:
            async for batch in stream.take(1000, within=0.02):
                for _ in batch:
                    await timed(rt, None, None)
    if "lazywm" in fixes:
        settle_agent.PartitionStore = LazyWatermarkStore  # type: ignore[misc]
    if "dictstore" in fixes:
        # what the changelog costs: the machines keep their state in plain dicts instead
        # (the staging store over a plain dict, and no changelog publishing)
        dict_table = SimpleNamespace(data={})  # one dict; keys carry the partition

        async def _no_changelog(table: Any, partition: int, writes: Any) -> None:
            return None

        real_store = settle_agent.PartitionStore
        settle_agent.PartitionStore = (  # type: ignore[misc]
            lambda table, partition: real_store(dict_table, partition))
        settle_agent.publish = _no_changelog  # type: ignore[assignment]

    if os.environ.get("BENCH_RECOVERY"):
        tick_wm = int(os.environ["BENCH_RECOVERY"])  # the ticks' watermark (event time)

        @app.task
        async def watch_recovery() -> None:
            # polled, not awaited: Faust may replace the recovery service's Event on rebalance
            while not app.tables.recovery.completed.is_set():
                await asyncio.sleep(0.02)
            completed = time.time() - spawned
            # the events that make every partition build its machine are written only now:
            # a fresh group reading records written before its (long) recovery sometimes
            # never gets them from Faust
            tick = json.dumps({"v": 1, "type": "control", "op": "tick",
                               "session_id": "__control__", "ts_ms": tick_wm,
                               "can_collect_data": False, "watermark_ms": tick_wm}).encode()
            for p in range(settings.partitions):
                await rt.topic("edit-events").send(key=b"__control__", value=tick, partition=p)
            while "figures" not in state:  # the expected events, processed after recovery
                await asyncio.sleep(0.02)
            result.write_text(json.dumps(
                {**state["figures"], "recovery_completed_after_spawn_s": completed}))

    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    if "spinner" in fixes:
        # faust.Worker keeps a terminal spinner at log levels >= WARN and, for it, sets the
        # root logger to DEBUG: every aiokafka/faust debug record is then built and handled
        worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
