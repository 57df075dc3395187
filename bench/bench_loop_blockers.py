"""What holds the worker's event loop: callbacks over 20 ms, with their CPU time, under the
end-to-end bench (issue 15, goal 3).

Run ``python -m bench.bench_loop_blockers [--bootstrap HOST:PORT] [--steady RATE]``: one
`bench_pipeline` run (capacity: the whole corpus waiting; ``--steady``: produced at RATE
events/s) with the worker traced by ``bench/loop_trace/sitecustomize.py``. Prints the loop-lag
probe's histogram figures and, from the worker's log, the callbacks that held the loop over
20 ms grouped by task, with the largest wall and CPU time of each, and the collector's passes
over 5 ms with their process id (the scoring pool's own passes do not hold the worker's
loop). On a shared machine most long callbacks are preemption (wall ≫ CPU); the goal is
about CPU work, so both are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import Any

import orjson

from bench import bench_pipeline as bp
from bench.bench_settle import broker
from bench.common import events

TRACE = Path(__file__).resolve().parent / "loop_trace"
LINE = re.compile(r"LOOPTRACE callback wall_ms=([\d.]+) cpu_ms=([\d.]+) (\S+)")
GC = re.compile(r"LOOPTRACE gc gen=(\d) wall_ms=([\d.]+) pid=(\d+)")


def blockers(log: str) -> dict[str, Any]:
    by_task: dict[str, dict[str, float]] = {}
    for wall, cpu, name in LINE.findall(log):
        row = by_task.setdefault(name, {"count": 0, "over_20ms_cpu": 0, "max_wall_ms": 0.0,
                                         "max_cpu_ms": 0.0})
        row["count"] += 1
        row["over_20ms_cpu"] += float(cpu) > 20
        row["max_wall_ms"] = max(row["max_wall_ms"], float(wall))
        row["max_cpu_ms"] = max(row["max_cpu_ms"], float(cpu))
    gcs = [(int(g), float(ms), int(pid)) for g, ms, pid in GC.findall(log)]
    return {"callbacks": dict(sorted(by_task.items(), key=lambda kv: -kv[1]["max_cpu_ms"])),
            "gc_passes_over_5ms": gcs}


def run(bootstrap: str, sessions: int, rate: float | None, cpu_processes: int
        ) -> dict[str, Any]:
    lines = [orjson.dumps(e) for e in events(sessions, seed=11)]
    bp.WORKER_ENV.update({"PYTHONPATH": f"{bp.ROOT}:{TRACE}", "EDITSTREAM_LOOP_TRACE": "1"})
    logs_before = set(Path("/tmp").glob("bench-pl-*/worker.log"))
    with bp.simulator() as url:
        figures = asyncio.run(bp.pipeline_run(
            bp.namespace(bootstrap, url, cpu_processes=cpu_processes), lines, rate=rate))
    new = set(Path("/tmp").glob("bench-pl-*/worker.log")) - logs_before
    log = "".join(p.read_text(errors="replace") for p in new)
    return {"examples_per_s": figures["examples_per_s"],
            "cpu_ms_per_example": figures["cpu_ms_per_example"],
            "loop_lag": figures["loop_lag"], **blockers(log)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="broker; default: start Kafka")
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--steady", type=float, default=None, help="events/s; default: all")
    parser.add_argument("--cpu-processes", type=int, default=1)
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap:
        print(json.dumps(run(bootstrap, args.sessions, args.steady, args.cpu_processes),
                         indent=1))


if __name__ == "__main__":
    main()
