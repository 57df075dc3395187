"""Replay: events/s of ``editstream replay`` vs. a bare consume of the same range.

Run ``python -m bench.bench_replay [--bootstrap HOST:PORT] [--sessions 100] [--runs 3]``.
A range of generated traces is produced to ``edit-events``; then, on the same broker:

* bare consume: an aiokafka consumer reading the range (no group, no decode), from its
  first fetch to the last offset;
* replay copy: ``editstream.replay.copy_range``, the replay's copy of the range into a fresh
  namespace (partition, order, keys and headers kept; acks=all idempotent producer) — the
  part of a replay that is pure Kafka I/O;
* full replay (one run, a smaller range, ``--full-sessions``): ``editstream.replay.replay``
  end to end (copy, worker start, settle, sample, score, distill against the model simulator
  with no added latency, until every example is accounted for).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import time
import uuid
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from bench.bench_settle import bench_settings, broker, load_topic
from bench.common import events, machine, median
from editstream.replay import copy_range, namespace, plan, replay
from editstream.simulator.server import spawn_simulator
from editstream.topics.kafka_io import ensure_topics
from editstream.topics.offsets import parse_when
from streams.settings import Settings


async def bare_consume(settings: Settings, topic: str) -> dict[str, Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker, enable_auto_commit=False,
                                max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        total = sum(ends.values())
        seen = 0
        t0 = time.perf_counter()  # the first fetch counts: the copy pays for it too
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            seen += sum(len(r) for r in batch.values())
        elapsed = time.perf_counter() - t0
    finally:
        await consumer.stop()
    return {"events": seen, "elapsed_s": elapsed, "events_per_s": seen / elapsed}


async def replay_copy(settings: Settings, topic: str) -> dict[str, Any]:
    ranges = await plan(settings.broker, topic, parse_when("earliest"), parse_when("latest"))
    rs = namespace(settings, uuid.uuid4().hex[:8], len(ranges))
    await ensure_topics(rs)
    t0 = time.perf_counter()
    with tqdm(disable=True) as bar:
        values = await copy_range(settings.broker, topic, rs, rs.topic("edit-events"), ranges,
                                  bar)
    elapsed = time.perf_counter() - t0
    return {"events": len(values), "elapsed_s": elapsed, "events_per_s": len(values) / elapsed}


def full_replay(bootstrap: str, sessions: int) -> dict[str, Any]:
    """``editstream replay`` end to end against a simulator subprocess (no latency)."""
    sim = spawn_simulator()
    url = sim.url
    try:
        tag = uuid.uuid4().hex[:8]
        s = bench_settings(bootstrap, f"bench-replay-{tag}-", f"bench-replay-{tag}").replace(
            student_url=url, teacher_url=url)
        lines = [orjson.dumps(e) for e in events(sessions, seed=9)]
        asyncio.run(load_topic(s, lines))
        topic = s.topic("edit-events")
        bare = asyncio.run(bare_consume(s, topic))
        t0 = time.perf_counter()
        result = asyncio.run(replay(s, topic, parse_when("earliest"), parse_when("latest"),
                                    progress=False, out=io.StringIO()))
        elapsed = time.perf_counter() - t0
    finally:
        sim.stop(timeout=10)
    return {"events": result.copied, "examples": len(result.expected), "elapsed_s": elapsed,
            "events_per_s": result.copied / elapsed,
            "examples_per_s": len(result.expected) / elapsed,
            "bare_consume_events_per_s": bare["events_per_s"],
            "ratio": result.copied / elapsed / bare["events_per_s"]}


def run(bootstrap: str, sessions: int = 400, runs: int = 3, full_sessions: int = 10
        ) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    s = bench_settings(bootstrap, f"bench-replay-{tag}-", f"bench-replay-{tag}")
    total = asyncio.run(load_topic(s, [orjson.dumps(e) for e in events(sessions, seed=8)]))
    topic = s.topic("edit-events")
    bare: list[dict[str, Any]] = []
    copy: list[dict[str, Any]] = []
    for _ in range(runs):  # interleaved
        bare.append(asyncio.run(bare_consume(s, topic)))
        copy.append(asyncio.run(replay_copy(s, topic)))
    b = median([r["events_per_s"] for r in bare])
    c = median([r["events_per_s"] for r in copy])
    figures: dict[str, Any] = {
        "machine": machine(),
        "events": total,
        "runs": runs,
        "bare_consume_events_per_s": b,
        "bare_consume_runs": [r["events_per_s"] for r in bare],
        "replay_copy_events_per_s": c,
        "replay_copy_runs": [r["events_per_s"] for r in copy],
        "ratio_copy": c / b,
    }
    if full_sessions:
        figures["full_replay"] = full_replay(bootstrap, full_sessions)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=None, help="broker; default: start Kafka")
    parser.add_argument("--sessions", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--full-sessions", type=int, default=10,
                        help="sessions of the end-to-end replay (0: skip it)")
    args = parser.parse_args(argv)
    with broker(args.bootstrap) as bootstrap:
        figures = run(bootstrap, args.sessions, args.runs, args.full_sessions)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
