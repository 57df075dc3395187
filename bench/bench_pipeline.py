"""End to end: pipeline examples/s per worker vs. settle-only examples/s on the same corpus.

Run ``python -m bench.bench_pipeline [--bootstrap HOST:PORT] [--sessions 60] [--runs 2]``
(without ``--bootstrap`` it starts a local Apache Kafka). Issue 15, goals 1, 3 and 5.

* corpus: generated traces (``editstream.sessions.generate``, seed 11),
  produced to ``edit-events`` of a
  fresh namespace per run (4 partitions, a flush control closing each partition);
* pipeline: one ``editstream worker`` process (the production command, exactly_once) and the
  model simulator with no added latency in its own process (student and teacher); timed
  from the first ``settled-examples`` record to the last ``training-records`` /
  ``rejected-examples`` record (the broker's record timestamps), once every prediction
  ingest accepts is accounted for; run with ``cpu_processes`` 1 (the default: the score
  stage in a process pool) and 0 (on the event loop);
* settle only: ``bench/settle_worker.py`` (bench_settle's worker: the production app with
  its Faust agents removed) on the same corpus, exactly_once; the same predictions over its
  first-batch → last-commit time;
* steady load: the corpus produced at a steady rate of half the measured pipeline capacity
  (predictions/s) into a running worker; the settle → training-record lag of each example
  (broker timestamps of its settled and its final record), after a 2 s warm-up;
* worker CPU: utime + stime of the worker and its children (the scoring pool) from /proc,
  read when the bench sees the first settled example and when the last one is accounted
  for; time per stage from ``editstream_stage_processing_seconds`` and the event-loop lag
  from ``editstream_event_loop_lag_seconds`` on the worker's metrics port (both as the
  difference between those two moments);
* scaling (``--scale``): the same pipeline with 8 partitions, one worker process vs. two;
* the stages' own work with Kafka taken out (``bench/bench_core_floor.py``): the ceiling it
  leaves for the ratio, with settle-only's CPU per example.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench import bench_core_floor
from bench.bench_settle import broker, load_topic, settle_run
from bench.common import events, machine, median
from editstream.demo import _request_id_of_dead_letter, expected_predictions
from editstream.infra.broker import free_port
from editstream.infra.process import spawn_worker
from editstream.simulator.server import spawn_simulator
from editstream.topics.kafka_io import ensure_topics, event_key, send_flush, start_producer
from streams.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
FINAL = ("training-records", "rejected-examples", "edit-events-dlq", "pipeline-dlq")
HOPS = ("student-samples", "scored-examples")  # intermediate records, for the lag per hop
WATCHED = (*FINAL, "settled-examples", *HOPS)
# topics whose record key is the example's request id (training records are keyed by their
# own id, dead letters by their source)
KEYED_BY_REQUEST = ("settled-examples", *HOPS, "rejected-examples")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SIMULATOR_PID = [0]
WORKER_ENV: dict[str, str] = {}  # extra environment of the workers (bench_loop_blockers)


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def simulator() -> Iterator[str]:
    """`editstream simulate` (no added latency) in its own process; its base URL (its pid
    in SIMULATOR_PID, for its CPU time)."""
    sim = spawn_simulator(cwd=ROOT)
    try:
        SIMULATOR_PID[0] = sim.pid
        yield sim.url
    finally:
        sim.stop(timeout=10)


def tree_cpu_s(pid: int) -> float:
    """utime + stime of a process and its live descendants (the scoring pool), seconds."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return total


def listening_pid(bootstrap: str) -> int:
    """The process listening on the (first) bootstrap address's port on this machine (the
    local broker, for its CPU time); 0 when there is none or it cannot be read."""
    port = int(bootstrap.split(",")[0].rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # LISTEN
                    inodes.add(f[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(proc.name)
    return 0


def scrape(port: int) -> dict[str, float]:
    """The worker's /metrics as {series: value} (histogram buckets, sums and counts)."""
    out: dict[str, float] = {}
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[name] = float(value)
    return out


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}


def histogram_quantiles(m: dict[str, float], name: str) -> dict[str, float | None]:
    """p50/p99 (the upper bound of the bucket holding them) and the largest non-empty
    bucket's bound (a bound on the max) of a label-less histogram."""
    buckets = sorted((float(k.split('le="')[1].rstrip('"}')), v) for k, v in m.items()
                     if k.startswith(f"{name}_bucket{{"))
    count = m.get(f"{name}_count", 0.0)
    res: dict[str, float | None] = {"count": count, "p50_le": None, "p99_le": None,
                                    "max_le": None}
    if not count:
        return res
    prev = 0.0
    for le, cum in buckets:
        if res["p50_le"] is None and cum >= 0.5 * count:
            res["p50_le"] = le
        if res["p99_le"] is None and cum >= 0.99 * count:
            res["p99_le"] = le
        if cum > prev:
            res["max_le"] = le
        prev = cum
    res["mean"] = m.get(f"{name}_sum", 0.0) / count
    return res


def stage_seconds(m: dict[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for k, v in m.items():
        if k.startswith("editstream_stage_processing_seconds_sum{"):
            stage = k.split('stage="')[1].split('"')[0]
            count = m.get(k.replace("_sum{", "_count{"), 0.0)
            out[stage] = {"seconds": v, "records": count}
    return out


# --------------------------------------------------------------------------- watching


class Watch:
    """Reads the output topics (read_committed) and accounts predictions as they finish."""

    def __init__(self, settings: Settings, expected: set[str]) -> None:
        self.settings = settings
        self.expected = expected
        self.settled: dict[str, int] = {}  # request_id -> broker timestamp ms
        self.final: dict[str, int] = {}
        self.hops: dict[str, dict[str, int]] = {h: {} for h in HOPS}
        self.first_seen_wall: float | None = None
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.broker, enable_auto_commit=False,
            isolation_level="read_committed", max_partition_fetch_bytes=8 << 20)

    async def start(self) -> None:
        await self.consumer.start()
        tps = [TopicPartition(self.settings.topic(t), p) for t in WATCHED
               for p in range(self.settings.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def poll(self) -> None:
        batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
        for tp, recs in batch.items():
            kind = tp.topic[len(self.settings.topic_prefix):]
            for r in recs:
                if kind in KEYED_BY_REQUEST:
                    # the key is the request id: no need to decode the value (this reader
                    # shares the machine's cores with the pipeline it measures)
                    rid: str | None = r.key.decode()
                    if kind == "settled-examples":
                        self.settled.setdefault(rid, r.timestamp)
                        if self.first_seen_wall is None:
                            self.first_seen_wall = time.time()
                        continue
                    if kind in self.hops:
                        self.hops[kind].setdefault(rid, r.timestamp)
                        continue
                else:
                    v = orjson.loads(r.value)
                    rid = (_request_id_of_dead_letter(v) if kind.endswith("dlq")
                           else v.get("request_id"))
                if rid is not None:
                    # an example's last record: an SFT and a preference record may both come
                    self.final[rid] = max(self.final.get(rid, 0), r.timestamp)

    def done(self) -> bool:
        return self.expected <= self.final.keys()

    async def stop(self) -> None:
        await self.consumer.stop()


def namespace(bootstrap: str, url: str, partitions: int = 4, **kw: Any) -> Settings:
    tag = uuid.uuid4().hex[:8]
    # idle ticks off: the input is finite and closed by flushes
    return Settings(broker=bootstrap, topic_prefix=f"bench-pl-{tag}-",
                    app_id=f"bench-pl-{tag}", idle_tick_ms=3_600_000,
                    partitions=partitions, log_level="warning", student_url=url,
                    teacher_url=url, processing_guarantee="exactly_once", **kw)


async def paced_produce(settings: Settings, lines: list[bytes], rate: float) -> None:
    """Send the events at `rate` events/s (in steps of 20 ms), then a flush per partition."""
    topic = settings.topic("edit-events")
    prod = await start_producer(settings)
    try:
        t0 = time.perf_counter()
        step = max(1, int(rate * 0.02))
        for i in range(0, len(lines), step):
            for raw in lines[i:i + step]:
                await prod.send(topic, raw, key=event_key(raw))
            wait = t0 + (i + step) / rate - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
        await prod.flush()
        await send_flush(prod, topic, range(settings.partitions))
    finally:
        await prod.stop()


async def pipeline_run(settings: Settings, lines: list[bytes], workers: int = 1,
                       rate: float | None = None, timeout_s: float = 600,
                       profile: Path | None = None, trace: Path | None = None
                       ) -> dict[str, Any]:
    """One run: load (or pace) the corpus, start the worker(s), wait until every prediction
    is accounted for; its figures. `profile`: py-spy samples of the (first) worker from the
    first settled example on, raw (collapsed stacks, idle frames included). `trace`: the
    worker's main-thread CPU by loop callback (bench/cpu_trace), written there and summed
    per example over the timed window in ``figures["cpu_trace"]``."""
    expected = expected_predictions(lines, settings)
    await ensure_topics(settings)
    if rate is None:
        await load_topic(settings, lines)
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-pl-")
    log = Path(tmp) / "worker.log"
    mp_dir = str(Path(tmp) / "prom") if workers > 1 else None
    env = {"PYTHONPATH": str(ROOT), **({"PROMETHEUS_MULTIPROC_DIR": mp_dir} if mp_dir else {}),
           **WORKER_ENV}
    if trace is not None:
        env.update({"PYTHONPATH": f"{env['PYTHONPATH']}:{TRACE_DIR}",
                    "EDITSTREAM_CPU_TRACE": str(trace)})
    procs = [spawn_worker(settings.replace(metrics_port=port), log, env=env, cwd=ROOT)
             for _ in range(workers)]
    watch = Watch(settings, expected)
    await watch.start()
    producing = None
    try:
        if rate is not None:
            producing = asyncio.create_task(paced_produce(settings, lines, rate))
        deadline = time.monotonic() + timeout_s
        cpu0 = m0 = None
        sim0 = tree_cpu_s(SIMULATOR_PID[0]) if SIMULATOR_PID[0] else 0.0
        broker_pid = listening_pid(settings.broker)
        broker0 = reader0 = 0.0
        spy = None
        while not watch.done():
            if time.monotonic() > deadline or any(not p.is_running() for p in procs):
                raise RuntimeError(f"pipeline run stalled ({len(watch.final)} of "
                                   f"{len(expected)} accounted):\n"
                                   + log.read_text(errors="replace")[-3000:])
            await watch.poll()
            if cpu0 is None and watch.first_seen_wall is not None:
                cpu0 = sum(tree_cpu_s(p.pid) for p in procs)
                sim0 = tree_cpu_s(SIMULATOR_PID[0]) if SIMULATOR_PID[0] else 0.0
                broker0 = tree_cpu_s(broker_pid) if broker_pid else 0.0
                reader0 = time.process_time()
                m0 = await asyncio.to_thread(scrape, port)
                if profile is not None:
                    spy = subprocess.Popen(
                        [str(Path(sys.executable).parent / "py-spy"), "record", "-p",
                         str(procs[0].pid), "-r", "100", "-d", "600", "--idle", "-f", "raw",
                         "-o", str(profile), "--nonblocking"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu1 = sum(tree_cpu_s(p.pid) for p in procs)
        sim1 = tree_cpu_s(SIMULATOR_PID[0]) if SIMULATOR_PID[0] else 0.0
        broker1 = tree_cpu_s(broker_pid) if broker_pid else 0.0
        reader1 = time.process_time()
        if spy is not None:
            spy.send_signal(2)  # py-spy writes its file on SIGINT
            spy.wait(timeout=30)
        m1 = await asyncio.to_thread(scrape, port)
        if producing is not None:
            await producing
    finally:
        await watch.stop()
        for p in procs:
            p.stop(timeout=30)
    first = min(watch.settled.values())
    last = max(watch.final[r] for r in expected)
    n = len(expected)
    elapsed = (last - first) / 1000
    m = diff(m1, m0 or {})
    stages = stage_seconds(m)
    figures: dict[str, Any] = {
        "examples": n, "workers": workers, "partitions": settings.partitions,
        "cpu_processes": settings.cpu_processes,
        "elapsed_s": elapsed, "examples_per_s": n / elapsed,
        "cpu_ms_per_example": (cpu1 - (cpu0 or 0.0)) / n * 1000,
        "simulator_cpu_ms_per_example": (sim1 - sim0) / n * 1000,
        # the local broker's (None: not on this machine); it serves the bench's reader too
        "broker_cpu_ms_per_example": (broker1 - broker0) / n * 1000 if broker_pid else None,
        # this process: the reader of every topic (and the paced producer, steady runs)
        "bench_cpu_ms_per_example": (reader1 - reader0) / n * 1000,
        "worker_cores": (cpu1 - (cpu0 or 0.0)) / elapsed,
        "stage_ms_per_example": {k: v["seconds"] / n * 1000 for k, v in stages.items()},
        "stage_ms_per_record": {k: v["seconds"] / v["records"] * 1000
                                for k, v in stages.items() if v["records"]},
        "loop_lag": histogram_quantiles(m, "editstream_event_loop_lag_seconds"),
        "metrics_scraped": bool(m1),
    }
    if trace is not None and trace.exists() and watch.first_seen_wall is not None:
        figures["cpu_trace"] = trace_figures(trace, watch.first_seen_wall, elapsed, n)
    if rate is not None:
        warm = first + 2000  # a worker starting up is not steady load
        timed = sorted((ts, (watch.final[r] - ts) / 1000) for r, ts in watch.settled.items()
                       if r in watch.final and ts >= warm)
        lags = sorted(lag for _, lag in timed)
        # median lag of each tenth of the run (by settle time): flat is latency, rising is
        # a backlog (the offered load above what the worker managed)
        tenth = max(1, len(timed) // 10)
        figures["lag_p50_by_tenth_s"] = [
            sorted(lag for _, lag in timed[i:i + tenth])[len(timed[i:i + tenth]) // 2]
            for i in range(0, len(timed) - tenth + 1, tenth)]
        # p50 of each hop's share: settled -> student-samples -> scored-examples -> final
        chain = [watch.settled, *(watch.hops[h] for h in HOPS), watch.final]
        names = ["settle→sample", "sample→score", "score→final"]
        figures["hop_p50_s"] = {}
        for name, a, b in zip(names, chain[:-1], chain[1:], strict=True):
            d = sorted((b[r] - a[r]) / 1000 for r in a if r in b and watch.settled.get(r, 0)
                       >= warm)
            if d:
                figures["hop_p50_s"][name] = d[len(d) // 2]
        figures["offered_events_per_s"] = rate
        figures["lag_examples"] = len(lags)
        if lags:
            figures["lag_p50_s"] = lags[len(lags) // 2]
            figures["lag_p99_s"] = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
            figures["lag_max_s"] = lags[-1]
    return figures


# --------------------------------------------------------------------------- CPU trace

TRACE_DIR = ROOT / "bench" / "cpu_trace"
STAGES = {"settled-examples": "sample", "student-samples": "score",
          "scored-examples": "distill", "repair": "repair", "model-retry": "retry"}


def trace_group(key: str) -> str | None:
    """What a trace key is charged to: a stage (a callback run for one of its records), the
    settle runner, Kafka's client, Faust's services, aiohttp outside a stage, the rest."""
    if m := re.match(r"(task|cb) \[([^\]]+)\]", key):
        return "stage " + STAGES.get(m.group(2), m.group(2))
    if key.startswith("sync"):
        return None  # nested in another key's time
    if "SettleRunner" in key:
        return "settle runner"
    if "Service._execute_task" in key:  # Faust's and mode's own loops (its Fetcher too)
        return "faust (fetch loop, message delivery, commits)"
    if re.search(r"Sender|aiokafka|AIOKafka|Fetcher\.|MessageAccumulator", key):
        return "aiokafka (produce, fetch, connections)"
    if re.search(r"aiohttp|ClientRequest|ClientResponse", key):
        return "aiohttp outside a stage"
    if re.search(r"Service\._execute_task|Conductor|faust|Agent", key):
        return "faust (fetch loop, message delivery, commits)"
    return "other loop callbacks"


def trace_figures(path: Path, first_wall: float, elapsed_s: float, n: int) -> dict[str, Any]:
    """Per example, the worker's main-thread CPU between the trace lines around the timed
    window: by group (`trace_group`), the largest keys, records and bytes sent per topic."""
    snaps = [json.loads(line) for line in path.read_text().splitlines()]
    t1 = first_wall + elapsed_s + 1.0  # the trace writes a line per second
    a = max((s for s in snaps if s["t"] <= first_wall), key=lambda s: s["t"],
            default=snaps[0])
    b = max((s for s in snaps if s["t"] <= t1), key=lambda s: s["t"])
    cpu = {k: v - a["cpu"].get(k, 0.0) for k, v in b["cpu"].items()}
    calls = {k: v - a["calls"].get(k, 0) for k, v in b["calls"].items()}
    size = {k: v - a["bytes"].get(k, 0) for k, v in b["bytes"].items()}
    groups: dict[str, float] = {}
    for k, v in cpu.items():
        if (g := trace_group(k)) is not None:
            groups[g] = groups.get(g, 0.0) + v
    # every callback over 10 ms of CPU in the whole run (its last line), start-up included
    long = [{"key": k, "cpu_ms": ms, "start_up": t < first_wall}
            for t, k, ms in snaps[-1].get("long", [])]
    return {
        "long_callbacks": long,
        "main_thread_ms_per_example": (b["main_cpu"] - a["main_cpu"]) / n * 1000,
        "by_group_ms_per_example": {g: v / n * 1000 for g, v in
                                    sorted(groups.items(), key=lambda kv: -kv[1])},
        "top": [{"key": k, "ms_per_example": v / n * 1000, "per_example": calls.get(k, 0) / n,
                 "us_per_call": v / max(1, calls.get(k, 0)) * 1e6,
                 "kib_per_example": size.get(k, 0) / n / 1024}
                for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])[:25]],
        "records_per_example": {k.removeprefix("Topic.send "): {
            "records": v / n, "kib_per_record": size.get(k, 0) / max(1, v) / 1024}
            for k, v in sorted(calls.items()) if k.startswith("Topic.send ")},
    }


# What a worker's busy main-thread samples are spent on (substrings of py-spy frames).
PROFILE_PARTS = {
    "kafka produce (aiokafka Sender, socket writes)": "Sender.",
    "kafka consume (aiokafka Fetcher)": "Fetcher.",
    "faust (streams, conductor, agents)": "faust/",
    "model HTTP clients (httpx + aiohttp)": "httpx/",
    "settle runner (agents/settle.py)": "agents/settle.py",
    "stage runner (agents/stages.py)": "agents/stages.py",
    "score stage (agents/score.py, pool IPC)": "agents/score.py",
    "pure core (streams/)": "streams/",
    "socket writes (_SelectorSocketTransport.write)": "_SelectorSocketTransport.write",
}


def summarize_profile(path: Path, main_frame: str = "run_worker") -> dict[str, Any]:
    """Main-thread py-spy samples (raw, --idle): the busy share and, of the busy samples,
    the share under each of PROFILE_PARTS and the top self-time frames."""
    total = idle = 0
    rows: list[tuple[list[str], int]] = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        if not any(main_frame in f for f in frames):
            continue
        total += n
        if "select (selectors.py" in frames[-1]:
            idle += n
            continue
        rows.append((frames, n))
    busy = max(1, total - idle)
    parts = {name: sum(n for fr, n in rows if any(key in f for f in fr)) / busy
             for name, key in PROFILE_PARTS.items()}
    leaf: dict[str, int] = {}
    for fr, n in rows:
        leaf[fr[-1]] = leaf.get(fr[-1], 0) + n
    top = sorted(leaf.items(), key=lambda kv: -kv[1])[:8]
    return {"samples": total, "busy_share": (total - idle) / max(1, total), "parts": parts,
            "top_self": [[f, n / busy] for f, n in top]}


def settle_only(bootstrap: str, lines: list[bytes], predictions: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    s = Settings(broker=bootstrap, topic_prefix=f"bench-plso-{tag}-", app_id=f"bench-plso-{tag}",
                 idle_tick_ms=3_600_000, partitions=4, log_level="warning",
                 processing_guarantee="exactly_once")
    total = asyncio.run(load_topic(s, lines))
    r = settle_run(s, total)
    r["examples"] = predictions
    r["examples_per_s"] = predictions / r["elapsed_s"]
    return r


def run(bootstrap: str, sessions: int = 60, runs: int = 2, scale: bool = True
        ) -> dict[str, Any]:
    evs = events(sessions, seed=11)
    lines = [orjson.dumps(e) for e in evs]
    with simulator() as url:
        predictions = len(expected_predictions(lines, namespace(bootstrap, url)))
        pool1: list[dict[str, Any]] = []
        pool0: list[dict[str, Any]] = []
        settle: list[dict[str, Any]] = []
        for _ in range(runs):  # interleaved
            settle.append(settle_only(bootstrap, lines, predictions))
            pool1.append(asyncio.run(pipeline_run(namespace(bootstrap, url, cpu_processes=1),
                                                  lines)))
            pool0.append(asyncio.run(pipeline_run(namespace(bootstrap, url, cpu_processes=0),
                                                  lines)))
        p1 = median([r["examples_per_s"] for r in pool1])
        p0 = median([r["examples_per_s"] for r in pool0])
        so = median([r["examples_per_s"] for r in settle])
        best = max(p0, p1)
        best_cpu = 0 if p0 >= p1 else 1
        profile = None
        cpu_trace = None
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "worker.txt"
            prof_run = asyncio.run(pipeline_run(namespace(bootstrap, url, cpu_processes=1),
                                                lines, profile=raw))
            if raw.exists():
                profile = {**summarize_profile(raw),
                           "examples_per_s": prof_run["examples_per_s"],
                           "worker_cores": prof_run["worker_cores"]}
            # a run of its own: the trace's wrappers would show in py-spy's frames; on the
            # loop (cpu_processes=0), so every stage's CPU is the main thread's
            traced = asyncio.run(pipeline_run(namespace(bootstrap, url, cpu_processes=0),
                                              lines, trace=Path(tmp) / "trace.jsonl"))
            cpu_trace = traced.get("cpu_trace")
        # steady load: half the measured capacity, as events/s of this corpus
        rate = 0.5 * best * len(lines) / predictions
        steady = asyncio.run(pipeline_run(namespace(bootstrap, url, cpu_processes=best_cpu),
                                          lines, rate=rate))
        scaling = None
        if scale:
            one, two = [], []
            for _ in range(runs):
                one.append(asyncio.run(pipeline_run(
                    namespace(bootstrap, url, partitions=8, cpu_processes=best_cpu), lines)))
                two.append(asyncio.run(pipeline_run(
                    namespace(bootstrap, url, partitions=8, cpu_processes=best_cpu), lines,
                    workers=2)))
            o = median([r["examples_per_s"] for r in one])
            t = median([r["examples_per_s"] for r in two])
            scaling = {"partitions": 8, "cpu_processes": best_cpu,
                       "one_worker_examples_per_s": o, "two_workers_examples_per_s": t,
                       "one_runs": one, "two_runs": two, "ratio": t / o}
    # the stages' own work with no Kafka at all: the bound goal 1 meets whatever the transport
    core_floor = bench_core_floor.run(sessions, runs=3)
    return {
        "machine": machine(),
        "broker": "Apache Kafka (editstream.infra.broker.start_broker('kafka')), exactly_once",
        "sessions": sessions,
        "events": len(lines),
        "predictions": predictions,
        "runs": runs,
        "settle_only": {"examples_per_s": so, "runs": settle,
                        "events_per_s": median([r["events_per_s"] for r in settle])},
        "pipeline_pool1": {"examples_per_s": p1, "runs": pool1},
        "pipeline_pool0": {"examples_per_s": p0, "runs": pool0},
        "ratio_pool1": p1 / so,
        "ratio_pool0": p0 / so,
        "steady": steady,
        "profile": profile,
        "cpu_trace": cpu_trace,
        "scaling": scaling,
        "core_floor": core_floor,
        "goal_ratio": 0.5,
        "before": {"ratio": 0.07, "examples_per_s": 45, "settle_examples_per_s": 650,
                   "what": "issue 15: 993 predictions in 21.8 s on Kafka exactly_once"},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="broker; default: start Kafka")
    parser.add_argument("--sessions", type=int, default=60)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--no-scale", action="store_true", help="skip the 2-worker runs")
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap:
        figures = run(bootstrap, args.sessions, args.runs, not args.no_scale)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
