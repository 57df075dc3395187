"""Settle throughput: edit events/s through ingest -> settle on one worker, vs. a bare
aiokafka consume -> produce passthrough of the same messages, on the same broker, same run.

Run ``python -m bench.bench_settle [--bootstrap HOST:PORT] [--sessions 100] [--runs 3]``
(without ``--bootstrap`` it starts a local Apache Kafka). Generated traces
(editstream.sessions.generate:
~77 events per session, 84% edits, 8% predictions of ~3 KB) are produced once to
``edit-events`` (4 partitions, keyed by session, a flush control at the end of each).

* settle: ``bench/settle_worker.py``, the production worker (``agents.app.create_app``) with
  every Faust agent removed, so only the settle runner (``agents/settle.py``, plain aiokafka)
  works; a fresh consumer group and changelog per run; timed from its first fetched batch to
  the batch that completes the input, committed (exactly_once) or acknowledged
  (at_least_once: settled examples, dead letters and changelog writes acked);
* settle, exactly_once: the same with ``processing_guarantee=exactly_once`` (one Kafka
  transaction per fetched batch and partition);
* baseline: a bare aiokafka consumer (fresh group) -> idempotent acks=all producer
  (``editstream.topics.kafka_io.start_producer``) copying every record to another topic, offsets
  committed after each fetched batch once its sends are acknowledged.

Goal: settle/baseline >= 0.5. ``--profile`` writes a pyinstrument profile of one settle run
to bench/results/settle-profile.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench.common import RESULTS, events, machine, median
from editstream.infra.broker import acreate_topics, start_broker
from editstream.infra.process import spawn_worker
from editstream.topics.kafka_io import ensure_topics, produce_events, start_producer
from streams.settings import Settings
from streams.settle import SettleMachine

ROOT = Path(__file__).resolve().parent.parent


def bench_settings(bootstrap: str, prefix: str, app_id: str) -> Settings:
    # Idle ticks off: a partition drained before the others must not write ticks into the
    # shared input topic (they would change later runs' input).
    return Settings(broker=bootstrap, topic_prefix=prefix, app_id=app_id,
                    idle_tick_ms=3_600_000, partitions=4, log_level="warning")


async def load_topic(settings: Settings, lines: list[bytes]) -> int:
    """Produce the events (plus one flush per partition); returns the records in the topic."""
    await ensure_topics(settings)
    n = await produce_events(settings, lines, flush=True)
    return n + settings.partitions


async def passthrough(settings: Settings, total: int, run: int) -> dict[str, Any]:
    """Bare aiokafka copy of ``edit-events`` to ``passthrough``, at-least-once."""
    source, sink = settings.topic("edit-events"), settings.topic("passthrough")
    await acreate_topics(settings.broker, [sink], settings.partitions)
    consumer = AIOKafkaConsumer(
        source, bootstrap_servers=settings.broker, group_id=f"{settings.app_id}-pt-{run}",
        enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    producer = await start_producer(settings)
    await consumer.start()
    try:
        seen = 0
        t0 = 0.0
        cpu0 = 0.0
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if not batch:
                continue
            if not seen:
                t0, cpu0 = time.perf_counter(), time.process_time()
            futures = []
            for tp, records in batch.items():
                for rec in records:
                    futures.append(await producer.send(sink, rec.value, key=rec.key,
                                                       partition=tp.partition))
                seen += len(records)
            await asyncio.gather(*futures)
            await consumer.commit()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": seen, "elapsed_s": elapsed, "cpu_s": cpu, "events_per_s": seen / elapsed}


def settle_run(settings: Settings, total: int, profile: Path | None = None,
              timeout_s: float = 300,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """One settle-only worker process over the whole topic; its figures."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        extra = {**(env or {}), "BENCH_EXPECTED": str(total), "BENCH_RESULT": str(result),
                 "BENCH_SPAWNED": str(time.time()), "PYTHONPATH": str(ROOT)}
        if profile is not None:
            extra["BENCH_PROFILE"] = str(profile)
        log = Path(tmp) / "worker.log"
        proc = spawn_worker(settings, log, env=extra, cwd=ROOT, module="bench.settle_worker")
        try:
            deadline = time.monotonic() + timeout_s
            while not result.exists():
                if not proc.is_running() or time.monotonic() > deadline:
                    raise RuntimeError("settle worker failed:\n"
                                       + log.read_text(errors="replace")[-3000:])
                time.sleep(0.2)
            time.sleep(0.1)  # the file is written in one call; let it land
            figures: dict[str, Any] = json.loads(result.read_text())
        finally:
            proc.stop(timeout=30)
    return figures


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with start_broker("kafka") as handle:
        yield handle.bootstrap


class _CountingStore(dict[str, Any]):
    """A dict store that counts what a changelog-backed table would write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: dict[str, int] = {}
        self.bytes: dict[str, int] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        kind = key[:2]
        self.writes[kind] = self.writes.get(kind, 0) + 1
        self.bytes[kind] = self.bytes.get(kind, 0) + len(key) + len(orjson.dumps(value))
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.writes["del"] = self.writes.get("del", 0) + 1  # a tombstone record
        super().__delitem__(key)


def changelog_volume(evs: list[dict[str, Any]], partitions: int = 4) -> dict[str, Any]:
    """Changelog records and bytes per event by key kind (m: watermark, p: prediction,
    k: known text, s: tracking state, del: tombstones), offline, one machine per partition
    as the worker has (partition by a hash of the session, like the producer's key)."""
    stores = [_CountingStore() for _ in range(partitions)]
    machines = [SettleMachine(store=st) for st in stores]
    for ev in evs:
        machines[zlib.crc32(ev["session_id"].encode()) % partitions].apply(ev)
    for m in machines:
        m.flush()
    n = len(evs)
    writes: dict[str, float] = {}
    size: dict[str, float] = {}
    for st in stores:
        for k, v in st.writes.items():
            writes[k] = writes.get(k, 0) + v / n
        for k, v in st.bytes.items():
            size[k] = size.get(k, 0) + v / n
    return {"records_per_event": writes, "bytes_per_event": size,
            "total_records_per_event": sum(writes.values()),
            "total_bytes_per_event": sum(size.values())}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "events_per_s": median([r["events_per_s"] for r in runs]),
        "events_per_s_runs": [r["events_per_s"] for r in runs],
        "cpu_us_per_event": median([r["cpu_s"] / r["events"] for r in runs]) * 1e6,
    }


def run(bootstrap: str, sessions: int = 100, runs: int = 3, profile: bool = False
        ) -> dict[str, Any]:
    evs = events(sessions, seed=8)
    lines = [orjson.dumps(e) for e in evs]
    tag = uuid.uuid4().hex[:8]
    base = bench_settings(bootstrap, f"bench-{tag}-", f"bench-settle-{tag}")
    total = asyncio.run(load_topic(base, lines))
    app_ids = iter(range(1000))

    def worker(prof: Path | None = None, **kw: Any) -> dict[str, Any]:
        return settle_run(base.replace(app_id=f"{base.app_id}-{next(app_ids)}", **kw), total,
                          prof)

    bare: list[dict[str, Any]] = []
    settle: list[dict[str, Any]] = []
    eos: list[dict[str, Any]] = []
    # interleaved, so drifts in machine load hit every variant alike
    for i in range(runs):
        # a pass of the baseline is short (~0.5 s): take the median of 3 for each run
        passes = [asyncio.run(passthrough(base, total, 3 * i + j)) for j in range(3)]
        bare.append(sorted(passes, key=lambda r: r["events_per_s"])[1])
        settle.append(worker())
        eos.append(worker(processing_guarantee="exactly_once"))
    profile_path = None
    if profile:
        RESULTS.mkdir(parents=True, exist_ok=True)
        profile_path = RESULTS / "settle-profile.txt"
        worker(profile_path)
    b, s, e = _summary(bare), _summary(settle), _summary(eos)
    return {
        "machine": machine(),
        "sessions": sessions,
        "events": total,
        "event_types": {t: sum(1 for e in evs if e["type"] == t)
                        for t in ("prediction", "edit", "outcome", "settled")},
        "mean_event_bytes": sum(map(len, lines)) / len(lines),
        "runs": runs,
        "baseline": b,
        "settle": s,
        "settle_exactly_once": e,
        "ratio": s["events_per_s"] / b["events_per_s"],
        "ratio_exactly_once": e["events_per_s"] / b["events_per_s"],
        "batches_per_run": median([r["batches"] for r in settle]),
        "debug_logging_in_worker": settle[0].get("debug_logging"),
        "changelog": changelog_volume(evs),
        "goal_ratio": 0.5,
        "before": {"ratio": 0.027, "settle_events_per_s": 737, "baseline_events_per_s": 27433,
                   "settle_cpu_us_per_event": 1073,
                   "what": "the Faust settle agent with its table (BENCHMARKS.md, 2026-11-26)"},
        "profile": str(profile_path.relative_to(ROOT)) if profile_path else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="broker; default: start Kafka")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap:
        figures = run(bootstrap, args.sessions, args.runs, args.profile)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{figures['events']} events, {figures['runs']} runs")
    for name in ("baseline", "settle", "settle_exactly_once"):
        row = figures[name]
        print(f"{name:26} {row['events_per_s']:9.0f} events/s "
              f"({row['cpu_us_per_event']:.0f} us CPU/event)")
    print(f"ratio {figures['ratio']:.3f}, exactly_once {figures['ratio_exactly_once']:.3f} "
          f"(goal >= 0.5; before: {figures['before']['ratio']})")


if __name__ == "__main__":
    main()
