"""``make bench``: run every benchmark on a local Apache Kafka and write BENCHMARKS.md.

Run ``python -m bench.run [--quick] [--bootstrap HOST:PORT] [--only NAME,...]``. Every figure
is a ratio against a baseline measured in the same run (or, for sampling, against the bound
the configuration allows), median of several runs; the machine, its load and the command
are written beside them. The raw figures go to bench/results/<name>.json.

Order: the benches that need no broker first (adaptive, scoring, sampling, local_model: the
real model of `make local-model` on llama-server, ~15 min on 2 cores, skipped when not
installed), then Kafka is
started once (``editstream.infra.broker.start_broker("kafka")``) for settle, state, replay, the
gateway bench (when ``bench/bench_gateway.py`` exists) and the end-to-end pipeline bench.
A bench that fails is reported as failed in BENCHMARKS.md and makes the command exit
non-zero; the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import (
    bench_adaptive,
    bench_local_model,
    bench_pipeline,
    bench_replay,
    bench_sampling,
    bench_scoring,
    bench_settle,
    bench_state,
)
from bench.common import load, machine, save
from editstream.infra.broker import start_broker

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "BENCHMARKS.md"
NAMES = ("adaptive", "scoring", "sampling", "local_model", "settle", "state", "replay",
         "gateway", "pipeline")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(name: str, fn: Callable[[], dict[str, Any]], log: dict[str, Any]) -> None:
    """Run one bench, save its figures, and keep errors instead of raising."""
    print(f"[bench] {name} ... (load {loadavg()})", flush=True)
    t0 = time.monotonic()
    try:
        figures = fn()
        figures["seconds"] = time.monotonic() - t0
        figures["load_after"] = loadavg()
        save(name, figures)
        log[name] = figures
        print(f"[bench] {name} done in {figures['seconds']:.0f}s", flush=True)
    except Exception:
        log[name] = {"error": traceback.format_exc(limit=8), "seconds": time.monotonic() - t0}
        print(f"[bench] {name} FAILED:\n{log[name]['error']}", flush=True)


@contextlib.contextmanager
def kafka(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with start_broker("kafka") as handle:
        print(f"[bench] Apache Kafka ready in {handle.started_in:.1f}s at {handle.bootstrap}",
              flush=True)
        yield handle.bootstrap


def gateway(bootstrap: str) -> dict[str, Any]:
    """bench/bench_gateway.py (another engineer's) in its own process; its saved figures."""
    # 60 000 events a round: 20 000 took ~0.5 s direct, too short to be steady on a busy box
    cmd = [sys.executable, "-m", "bench.bench_gateway", "--broker", bootstrap,
           "--events", "60000", "--rounds", "5", "--max-seconds", "120"]
    subprocess.run(cmd, cwd=ROOT, check=True, timeout=600, stdout=subprocess.DEVNULL)
    figures = load("gateway")
    if figures is None:
        raise RuntimeError("bench_gateway wrote no bench/results/gateway.json")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller inputs and 2 runs (a smoke test, not for the record)")
    parser.add_argument("--bootstrap", default=None, help="use this broker instead of Kafka")
    parser.add_argument("--only", default=",".join(NAMES), help="comma-separated subset")
    parser.add_argument("--saved", default="",
                        help="comma-separated benches not to run but to report as run now "
                             "from bench/results/NAME.json (one a bench's own --save wrote "
                             "in parts, e.g. `python -m bench.bench_local_model --save`)")
    args = parser.parse_args(argv)
    saved_now = {n for n in args.saved.split(",") if n}
    only = set(args.only.split(",")) - saved_now
    runs = 2 if args.quick else 3
    scale = 0.3 if args.quick else 1.0
    started = time.monotonic()
    meta = {"machine": machine(), "load_start": loadavg(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": ("make bench" if not saved_now and args.only == ",".join(NAMES)
                        else "python -m bench.run " + " ".join(a for a in (argv or sys.argv[1:])))
            + ("  (--quick)" if args.quick else ""),
            "commit": _git_commit()}
    log: dict[str, Any] = {}
    if "adaptive" in only:
        timed("adaptive", lambda: bench_adaptive.run(120 if args.quick else 400, seed=8), log)
    if "scoring" in only:
        timed("scoring", lambda: bench_scoring.run(15), log)
    if "sampling" in only:
        timed("sampling", lambda: bench_sampling.run(runs, scale), log)
    if "local_model" in only and local_model_installed():
        timed("local_model", lambda: bench_local_model.run(args.quick), log)
    if only & {"settle", "state", "replay", "gateway", "pipeline"}:
        with kafka(args.bootstrap) as bootstrap:
            if "settle" in only:
                timed("settle", lambda: bench_settle.run(
                    bootstrap, 40 if args.quick else 100, runs, profile=True), log)
            if "state" in only:
                timed("state", lambda: state(bootstrap, args.quick), log)
            if "replay" in only:
                timed("replay", lambda: bench_replay.run(
                    bootstrap, 100 if args.quick else 400, runs, 5 if args.quick else 10), log)
            if "gateway" in only and (ROOT / "bench" / "bench_gateway.py").exists():
                timed("gateway", lambda: gateway(bootstrap), log)
            if "pipeline" in only:
                timed("pipeline", lambda: bench_pipeline.run(
                    bootstrap, 60 if args.quick else 200, 1 if args.quick else 2), log)
    meta["load_end"] = loadavg()
    meta["seconds"] = time.monotonic() - started
    for name in saved_now:
        if (figures := load(name)) is not None:
            log[name] = figures
    # figures of benches not run this time come from their last saved results
    for name in NAMES:
        if name not in log and (saved := load(name)) is not None:
            log[name] = {**saved, "stale": True}
    OUT.write_text(render(meta, log))
    print(f"[bench] wrote {OUT.relative_to(ROOT)} in {meta['seconds']:.0f}s", flush=True)
    return 1 if any("error" in v for v in log.values()) else 0


def state(bootstrap: str, quick: bool) -> dict[str, Any]:
    """In-process figures and the settle runner's restore from the Kafka changelog, both at
    100 000 open predictions (the issue's size; the Faust table's recovery was only measured
    at 20 000, it took 16 s)."""
    open_count = 20_000 if quick else 100_000
    kafka_open = 5_000 if quick else 100_000
    lines = bench_state.prediction_lines(open_count)
    mem = bench_state.memory(lines)
    m, store = mem.pop("store")
    figures: dict[str, Any] = {"machine": machine(), "memory": mem,
                               **bench_state.rebuild(store)}
    del m, store, lines
    small_lines = bench_state.prediction_lines(kafka_open)
    sm, small, _ = bench_state.fill(small_lines)
    figures["kafka"] = bench_state.kafka_recovery(bootstrap, small, sm.open_count)
    return figures


def local_model_installed() -> bool:
    """The real-model tier (`make local-model`) is there; without it the bench is skipped
    and its last saved figures are shown."""
    from editstream.infra.local_model import server_installed

    return server_installed()


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "bench", "streams",
                                "agents", "editstream"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout.strip()
        return out + (" (the working tree has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --------------------------------------------------------------------------- rendering


def render(meta: dict[str, Any], log: dict[str, Any]) -> str:
    from bench.report import render_all

    return render_all(meta, log)


if __name__ == "__main__":
    sys.exit(main())
