"""A/B of the end-to-end capacity run between source trees, with the worker's CPU by stage.

Run ``python -m bench.ab_pipeline --trees /tmp/before,. [--runs 2] [--trace]
[--bootstrap HOST:PORT]``: one Kafka and one simulator; for each run, each tree in turn runs
`bench_pipeline.pipeline_run` (its worker started from that tree: ``PYTHONPATH`` and cwd),
so before and after alternate in the same conditions. A tree may carry settings for its run:
``.@producer_linger_ms=50+cpu_processes=1`` (numbers). ``--trace`` loads
``bench/cpu_trace/sitecustomize.py`` into the worker and prints its main-thread CPU per
example by stage (`bench_pipeline.trace_figures`, also by loop callback and with the records
and bytes sent per example in the JSON). The before
tree must have the compiled scoring extension (copy ``streams/scoring/_native*.so`` into it).
Results are appended to ``--out`` as JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import orjson

from bench import bench_pipeline as bp
from bench.bench_settle import broker
from bench.common import events


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
    lines = [orjson.dumps(e) for e in events(a.sessions, seed=11)]
    with broker(a.bootstrap) as bootstrap, bp.simulator() as url:
        for run in range(a.runs):
            for spec in a.trees.split(","):
                tree, _, extra = spec.partition("@")
                kw = {k: float(v) if "." in v else int(v)
                      for k, v in (kv.split("=", 1) for kv in extra.split("+") if kv)}
                kw.setdefault("cpu_processes", a.cpu_processes)
                bp.ROOT = Path(tree).resolve()
                trace = (Path(f"/tmp/ab-pipeline-trace-{run}-{int(time.time())}.jsonl")
                         if a.trace else None)
                r = asyncio.run(bp.pipeline_run(bp.namespace(bootstrap, url, **kw), lines,
                                                trace=trace))
                r.update(tree=spec, run=run)
                with open(a.out, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(json.dumps({k: r[k] for k in (
                    "tree", "run", "examples_per_s", "cpu_ms_per_example",
                    "simulator_cpu_ms_per_example", "broker_cpu_ms_per_example",
                    "bench_cpu_ms_per_example")}), flush=True)
                if "cpu_trace" in r:
                    for g, ms in r["cpu_trace"]["by_group_ms_per_example"].items():
                        print(f"  {ms:6.3f} ms/example  {g}", flush=True)


if __name__ == "__main__":
    main()
