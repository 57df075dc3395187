"""A/B of the end-to-end capacity run between source trees, with the worker's CPU by stage.

Run ``python -m bench.ab_pipeline --trees /tmp/before,. [--runs 2] [--trace]
[--bootstrap HOST:PORT]``: one Kafka and one simulator; for each run, each tree in turn runs
`bench_pipeline.pipeline_run` (its worker started from that tree: ``PYTHONPATH`` and cwd),
so before and after alternate in the same conditions. A tree may carry settings for its run:
``.@producer_linger_ms=50+cpu_processes=1`` (integers). ``--trace`` loads
``bench/cpu_trace/sitecustomize.py`` into the worker and prints its main-thread CPU per
example by stage and by loop callback, and the records and bytes sent per example. The before
tree must have the compiled scoring extension (copy ``streams/scoring/_native*.so`` into it).
Results are appended to ``--out`` as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import time
from pathlib import Path
from typing import Any

import orjson

from bench import bench_pipeline as bp
from bench.bench_settle import broker
from bench.common import events

TRACE_DIR = Path(__file__).resolve().parent / "cpu_trace"
STAGES = {"settled-examples": "sample", "student-samples": "score",
          "scored-examples": "distill", "repair": "repair", "model-retry": "retry"}
_WATCHES: list[bp.Watch] = []


class _Watch(bp.Watch):
    """bench_pipeline's watch, kept so the run's first settled example's wall time is known."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _WATCHES.append(self)


def group(key: str) -> str | None:
    """What a trace key is charged to: a stage (a callback run for one of its records), the
    settle runner, Kafka's client, Faust's services, aiohttp outside a stage, the rest."""
    if m := re.match(r"(task|cb) \[([^\]]+)\]", key):
        return "stage " + STAGES.get(m.group(2), m.group(2))
    if key.startswith("sync"):
        return None  # nested in another key's time
    if "SettleRunner" in key:
        return "settle runner"
    if re.search(r"Sender|aiokafka|AIOKafka|Fetcher\.|MessageAccumulator", key):
        return "aiokafka (produce, fetch, connections)"
    if re.search(r"aiohttp|ClientRequest|ClientResponse", key):
        return "aiohttp outside a stage"
    if re.search(r"Service\._execute_task|Conductor|faust|Agent", key):
        return "faust/mode services (fetch loop, message delivery, commits)"
    return "other loop callbacks"


def trace_figures(r: dict[str, Any]) -> dict[str, Any]:
    """Per example, from the worker's trace lines around the timed window."""
    snaps = [json.loads(line) for line in Path(r["trace"]).read_text().splitlines()]
    t0, t1 = r["first_seen_wall"], r["first_seen_wall"] + r["elapsed_s"] + 1.0
    a = max((s for s in snaps if s["t"] <= t0), key=lambda s: s["t"], default=snaps[0])
    b = max((s for s in snaps if s["t"] <= t1), key=lambda s: s["t"])
    n = r["examples"]
    cpu = {k: v - a["cpu"].get(k, 0.0) for k, v in b["cpu"].items()}
    calls = {k: v - a["calls"].get(k, 0) for k, v in b["calls"].items()}
    size = {k: v - a["bytes"].get(k, 0) for k, v in b["bytes"].items()}
    groups: collections.Counter[str] = collections.Counter()
    for k, v in cpu.items():
        if (g := group(k)) is not None:
            groups[g] += v
    return {
        "main_thread_ms_per_example": (b["main_cpu"] - a["main_cpu"]) / n * 1000,
        "by_group_ms_per_example": {g: v / n * 1000 for g, v in groups.most_common()},
        "top": [{"key": k, "ms_per_example": v / n * 1000, "per_example": calls.get(k, 0) / n,
                 "us_per_call": v / max(1, calls.get(k, 0)) * 1e6,
                 "kib_per_example": size.get(k, 0) / n / 1024}
                for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])[:25]],
        "records_per_example": {k.removeprefix("Topic.send "): {
            "records": v / n, "kib_per_record": size.get(k, 0) / max(1, v) / 1024}
            for k, v in sorted(calls.items()) if k.startswith("Topic.send ")},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trees", required=True, help="comma-separated source trees")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--cpu-processes", type=int, default=0)
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--bootstrap", default=None)
    ap.add_argument("--out", default="ab_pipeline.jsonl")
    a = ap.parse_args(argv)
    bp.Watch = _Watch  # type: ignore[misc]
    lines = [orjson.dumps(e) for e in events(a.sessions, seed=11)]
    with broker(a.bootstrap) as bootstrap, bp.simulator() as url:
        for run in range(a.runs):
            for spec in a.trees.split(","):
                tree, _, extra = spec.partition("@")
                kw = {k: int(v) for k, v in (kv.split("=", 1) for kv in extra.split("+") if kv)}
                kw.setdefault("cpu_processes", a.cpu_processes)
                bp.ROOT = Path(tree).resolve()
                bp.WORKER_ENV.clear()
                trace = None
                if a.trace:
                    trace = Path(f"/tmp/ab-pipeline-trace-{run}-{int(time.time())}.jsonl")
                    bp.WORKER_ENV.update({"PYTHONPATH": f"{bp.ROOT}:{TRACE_DIR}",
                                          "EDITSTREAM_CPU_TRACE": str(trace)})
                _WATCHES.clear()
                r = asyncio.run(bp.pipeline_run(bp.namespace(bootstrap, url, **kw), lines))
                r.update(tree=spec, run=run, first_seen_wall=_WATCHES[0].first_seen_wall,
                         trace=str(trace) if trace else None)
                if trace is not None:
                    r["cpu_trace"] = trace_figures(r)
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(json.dumps({k: r[k] for k in ("tree", "run", "examples_per_s",
                                                    "cpu_ms_per_example")}), flush=True)
                if "cpu_trace" in r:
                    for g, ms in r["cpu_trace"]["by_group_ms_per_example"].items():
                        print(f"  {ms:6.3f} ms/example  {g}", flush=True)


if __name__ == "__main__":
    main()
