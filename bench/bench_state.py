"""Settle state: memory per open prediction, and recovery of 100 000 open predictions.

Run ``python -m bench.bench_state [--bootstrap HOST:PORT] [--open 100000] [--no-kafka]``.

* memory: a ``SettleMachine`` with a dict store opens ``--open`` predictions cloned from
  generated ones (real excerpts, histories, ~3 KB of JSON each), every event freshly decoded
  from its JSON bytes as the worker does, so the store holds its own objects. Measured twice:
  Python allocations (tracemalloc) and the process RSS delta (a separate pass: tracemalloc's
  own bookkeeping would inflate RSS);
* rebuild: a new ``SettleMachine`` on that store (what a restarted worker does per partition
  once its table is back), median of 3;
* Kafka: the same entries written to the settle state changelog of a fresh app id (4
  partitions, JSON keys and values), then the settle-only worker (``bench/settle_worker.py``)
  started on it: the settle runner's restore time (changelog read to its end, machines
  rebuilt; timed inside the runner, with the same for an empty changelog as the fixed part)
  and the time from spawn until a tick of each partition was processed, minus the same for
  an empty changelog; and the worker's RSS minus the
  empty worker's, per open prediction.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import statistics
import time
import tracemalloc
import uuid
import zlib
from pathlib import Path
from typing import Any

import orjson

from bench.bench_settle import bench_settings, broker, settle_run
from bench.common import events, machine, median
from editstream.topics.kafka_io import ensure_topics, start_producer
from schemas.topics import settle_changelog
from streams.settings import Settings
from streams.settle import SettleMachine, changelog_records

T0 = 1_764_000_000_000  # event time of every clone: nothing becomes due


def prediction_lines(count: int) -> list[bytes]:
    """``count`` prediction events (JSON) cloned from generated ones, unique request ids."""
    preds = [e for e in events(100, seed=8) if e["type"] == "prediction"]
    out = []
    for i in range(count):
        ev = dict(preds[i % len(preds)])
        ev["request_id"] = f"bench-{i}"
        ev["session_id"] = f"bench-session-{i % 5000}"
        ev["ts_ms"] = T0
        out.append(orjson.dumps(ev))
    return out


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fill(lines: list[bytes]) -> tuple[SettleMachine, dict[str, Any], float]:
    store: dict[str, Any] = {}
    m = SettleMachine(store=store)
    t0 = time.perf_counter()
    for raw in lines:
        result = m.apply(orjson.loads(raw))
        assert result.error is None and not result.settled
    return m, store, time.perf_counter() - t0


def memory(lines: list[bytes]) -> dict[str, Any]:
    n = len(lines)
    gc.collect()
    rss0 = rss_bytes()
    m, store, took = fill(lines)
    gc.collect()
    rss = rss_bytes() - rss0
    assert m.open_count == n
    del m, store
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    m, store, _ = fill(lines)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    json_bytes = statistics.mean(len(raw) for raw in lines)
    return {
        "open": n,
        "fill_s": took,
        "fill_per_s": n / took,
        "rss_bytes_per_open": rss / n,
        "traced_bytes_per_open": traced / n,
        "prediction_json_bytes": json_bytes,
        "store": (m, store),
    }


def rebuild(store: dict[str, Any], repeat: int = 3) -> dict[str, Any]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        m = SettleMachine(store=store)
        times.append(time.perf_counter() - t0)
        assert m.open_count > 0
    return {"rebuild_s": median(times), "rebuild_s_runs": times}


def partition_of(key: str, partitions: int) -> int:
    """The source partition an entry lives in (all keys of one request id together)."""
    rid = key[2:]
    return zlib.crc32(rid.encode()) % partitions


async def write_changelog(settings: Settings, store: dict[str, Any]) -> int:
    """The entries as the settle state changelog (the worker then writes one tick per source
    partition once restored)."""
    topic = settle_changelog(settings)  # created (compacted) by ensure_topics
    prod = await start_producer(settings)
    n = 0
    try:
        pending = []
        for key, value in store.items():
            parts = (range(settings.partitions) if key == "m:watermark"
                     else [partition_of(key, settings.partitions)])
            for p in parts:
                [(k, v)] = changelog_records(p, {key: value}, None)
                pending.append(await prod.send(topic, v, key=k, partition=p))
                n += 1
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await prod.stop()
    return n


def kafka_recovery(bootstrap: str, store: dict[str, Any], open_count: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    full = bench_settings(bootstrap, f"bench-state-{tag}-", f"bench-state-{tag}")
    empty = bench_settings(bootstrap, f"bench-state0-{tag}-", f"bench-state0-{tag}")
    for s in (full, empty):
        asyncio.run(ensure_topics(s))
    t0 = time.perf_counter()
    records = asyncio.run(write_changelog(full, store))
    write_s = time.perf_counter() - t0
    asyncio.run(write_changelog(empty, {}))
    env = {"BENCH_RECOVERY": str(T0)}
    empty_run = settle_run(empty, full.partitions, env=env, timeout_s=180)
    full_run = settle_run(full, full.partitions, env=env, timeout_s=600)
    # the runner's own restore time (changelog read, machines rebuilt), timed in the runner:
    # time from spawn is dominated by the worker's start-up, which varies more than that; the
    # empty changelog's restore shows the fixed part (producer init, first metadata/offsets)
    recovery = full_run["restore_s"]
    first = full_run["first_event_after_spawn_s"] - empty_run["first_event_after_spawn_s"]
    ready = (full_run["first_event_after_spawn_s"] + full_run["elapsed_s"]
             - empty_run["first_event_after_spawn_s"] - empty_run["elapsed_s"])
    return {
        "open": open_count,
        "changelog_records": records,
        "changelog_write_s": write_s,
        "recovery_s": recovery,
        "empty_restore_s": empty_run["restore_s"],
        "open_restored": full_run.get("open_predictions"),
        "first_event_s": first,
        "all_partitions_ready_s": ready,
        "worker_rss_bytes_per_open": (full_run["rss_bytes"] - empty_run["rss_bytes"])
        / open_count,
        "empty_worker": empty_run,
        "full_worker": full_run,
    }


def run(bootstrap: str | None, open_count: int = 100_000) -> dict[str, Any]:
    lines = prediction_lines(open_count)
    mem = memory(lines)
    m, store = mem.pop("store")
    figures: dict[str, Any] = {"machine": machine(), "memory": mem, **rebuild(store)}
    if bootstrap is not None:
        figures["kafka"] = kafka_recovery(bootstrap, store, m.open_count)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="broker; default: start Kafka")
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--no-kafka", action="store_true", help="memory and rebuild only")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    ctx = contextlib.nullcontext(None) if args.no_kafka else broker(args.bootstrap)
    with ctx as bootstrap:
        figures = run(bootstrap, args.open)
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
