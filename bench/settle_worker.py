"""A worker that runs only the settle stage, instrumented for bench/bench_settle.py.

The app is the production one (``agents.app.create_app``: same Faust options, the settle
runner of ``agents/settle.py`` as its service); every Faust agent and the stage runner
(``agents/stages.py``) are removed before the worker starts, so the later stages cost
nothing. The runner's ``process`` (one fetched batch of one
partition, returning once the batch is committed, or acknowledged under at_least_once) is
wrapped to time the stage from the first batch to the one that completes the input: the
input topic's offsets are contiguous, so it is complete once the next offsets of all
partitions add up to ``BENCH_EXPECTED``. The figures are written to ``BENCH_RESULT`` as JSON.
``BENCH_PROFILE``: also write a pyinstrument text profile of that window to this path.
``BENCH_RECOVERY=<watermark_ms>``: also report when the runner had restored its partitions
from the changelog, counted from ``BENCH_SPAWNED`` (the state bench restarts a worker on a big
changelog), and the RSS; once restored, the worker writes one control tick (that watermark)
per partition itself, and those are the expected records.

Run by the bench as ``python -m bench.settle_worker`` with ``EDITSTREAM_*`` settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from agents.app import create_app
from editstream.worker import build_worker
from streams.settings import from_env


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
    app, rt = create_app(settings)
    for name in list(app.agents):
        del app.agents[name]  # not started: their topics are never subscribed
    if getattr(rt, "stages", None) is not None:  # the stage runner: not started either
        app._extra_services.remove(rt.stages)
        rt.stages = None
    runner = rt.settle
    spawned = float(os.environ.get("BENCH_SPAWNED", time.time()))
    original = runner.process
    state: dict[str, Any] = {"t0": 0.0, "cpu0": 0.0, "profiler": None, "batches": 0,
                             "next": {}}

    async def timed(tp: Any, records: list[Any]) -> tuple[Any, int | None]:
        if state["batches"] == 0:
            state["first_event_after_spawn_s"] = time.time() - spawned
            state["debug_logging"] = sorted(  # loggers that format DEBUG records (costly)
                name for name in ("", "aiokafka", "faust", "mode", "agents")
                if logging.getLogger(name).isEnabledFor(logging.DEBUG))
            if profile_to:
                from pyinstrument import Profiler

                state["profiler"] = Profiler(async_mode="disabled")
                state["profiler"].start()
            state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
        state["batches"] += 1
        out = await original(tp, records)
        part = runner.parts.get(tp.partition)
        if part is not None and part.next_offset is not None:
            state["next"][tp.partition] = part.next_offset
        if "figures" not in state and sum(state["next"].values()) >= expected:
            elapsed = time.perf_counter() - state["t0"]
            cpu = time.process_time() - state["cpu0"]
            if state["profiler"] is not None:
                state["profiler"].stop()
                prof = state["profiler"]
                show_all = os.environ.get("BENCH_PROFILE_ALL") == "1"
                Path(profile_to or "").write_text(
                    prof.output_text(unicode=False, color=False, show_all=show_all)
                    + "\n\n" + prof.output_text(unicode=False, color=False, flat=True))
            events = sum(state["next"].values())
            state["figures"] = {"events": events, "elapsed_s": elapsed, "cpu_s": cpu,
                                "events_per_s": events / elapsed,
                                "batches": state["batches"],
                                "first_event_after_spawn_s": state["first_event_after_spawn_s"],
                                "debug_logging": state["debug_logging"],
                                "rss_bytes": rss_bytes()}
            if not os.environ.get("BENCH_RECOVERY"):
                result.write_text(json.dumps(state["figures"]))
        return out

    runner.process = timed

    if os.environ.get("BENCH_RECOVERY"):
        tick_wm = int(os.environ["BENCH_RECOVERY"])  # the ticks' watermark (event time)

        @app.task
        async def watch_recovery() -> None:
            await runner.restored.wait()  # every assigned partition restored
            completed = time.time() - spawned
            open_predictions = runner.open_total()
            # the expected records: one tick per partition, written once restored
            tick = json.dumps({"v": 1, "type": "control", "op": "tick",
                               "session_id": "__control__", "ts_ms": tick_wm,
                               "can_collect_data": False, "watermark_ms": tick_wm}).encode()
            for p in range(settings.partitions):
                await runner.producer.send_and_wait(runner.source, tick, key=b"__control__",
                                                    partition=p)
            while "figures" not in state:
                await asyncio.sleep(0.02)
            result.write_text(json.dumps(
                {**state["figures"], "recovery_completed_after_spawn_s": completed,
                 "restore_s": runner.restore_s, "open_predictions": open_predictions}))

    build_worker(app, settings).execute_from_commandline()


if __name__ == "__main__":
    main()
