"""Shared Apache Kafka fixtures for the replay / export tests (loaded as a pytest plugin with
`pytest_plugins = ("tests.integration.kafka_fixtures",)`, so one broker and one live run serve
every module of the session).

`kafka_broker`: one real single-node Apache Kafka 4.1 (KRaft) for the whole session.
`live_run`: the pipeline run live on it — a worker fed in real time, the seeded events paced
by their `ts_ms` gaps (compressed, with two deliberate stalls so idle ticks decide settles),
drained until every prediction is accounted for. Replays and exports work from its topics.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from editstream.demo import accounted, collect, expected_predictions
from editstream.infra.broker import BrokerError, BrokerHandle, ensure_kafka, start_broker
from editstream.sessions.generate import GenerateConfig, generate_events
from editstream.topics.kafka_io import ensure_topics, event_key, send_flush, start_producer
from editstream.topics.offsets import describe_group
from streams.settings import Settings
from tests.integration.conftest import Simulator, Worker, run_settings

# Event time runs this many times faster than the feed; no single pause is longer than CAP.
COMPRESS = 40.0
CAP_S = 1.0
STALL_S = 3.0  # two pauses longer than quiescence_ms in wall time → idle ticks settle
QUIESCENCE_MS = 1500


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerHandle]:
    # The Apache Kafka tier is part of `make test` and CI: a missing Java or Maven fails it
    # loudly. EDITSTREAM_SKIP_KAFKA=1 skips it on purpose (a machine without Java).
    if os.environ.get("EDITSTREAM_SKIP_KAFKA") == "1":
        pytest.skip("EDITSTREAM_SKIP_KAFKA=1")
    if shutil.which("java") is None:
        pytest.fail("java is not installed: the Apache Kafka tier needs Java 17+")
    try:
        ensure_kafka()
    except BrokerError as exc:
        pytest.fail(f"Apache Kafka jars unavailable: {exc}")
    with start_broker("kafka", data_dir=tmp_path_factory.mktemp("kafka-broker")) as handle:
        yield handle


@dataclass
class LiveRun:
    settings: Settings
    events: list[dict[str, Any]]
    expected: set[str]
    outputs: dict[str, list[dict[str, Any]]]
    feed_seconds: float
    stalls: list[str]  # request ids of the predictions after which the feed paused


async def wait_group_stable(settings: Settings, worker: Worker, timeout: float = 90) -> None:
    """Until the worker's consumer group has members and is Stable (it is consuming)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            state = await describe_group(admin, settings.app_id)
            if state.state == "Stable" and state.members:
                return
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            assert time.monotonic() < deadline, "worker never joined\n" + worker.log_tail()
            await asyncio.sleep(0.3)
    finally:
        await admin.close()


def stall_points(events: list[dict[str, Any]], forwarded: set[str], n: int = 2) -> set[int]:
    """Indexes of predictions whose session's next event is an edit due within quiescence:
    pausing there lets a live tick settle the prediction before that edit arrives."""
    picks: set[int] = set()
    for i, ev in enumerate(events):
        if ev["type"] != "prediction" or ev["request_id"] not in forwarded:
            continue
        nxt = next((e for e in events[i + 1:] if e["session_id"] == ev["session_id"]), None)
        if nxt and nxt["type"] == "edit" and nxt["ts_ms"] - ev["ts_ms"] < QUIESCENCE_MS:
            picks.add(i)
        if len(picks) >= n:
            break
    return picks


async def paced_feed(settings: Settings, events: list[dict[str, Any]], stalls: set[int]
                     ) -> float:
    """Produce like editors would: in order, sleeping the (compressed) ts_ms gaps."""
    t0 = time.monotonic()
    topic = settings.topic("edit-events")
    prod = await start_producer(settings)
    try:
        prev = events[0]["ts_ms"]
        for i, ev in enumerate(events):
            await asyncio.sleep(min(max(0, ev["ts_ms"] - prev) / 1000 / COMPRESS, CAP_S))
            prev = ev["ts_ms"]
            raw = orjson.dumps(ev)
            await prod.send_and_wait(topic, raw, key=event_key(raw))
            if i in stalls:
                await asyncio.sleep(STALL_S)
        await send_flush(prod, topic, await prod.partitions_for(topic))
    finally:
        await prod.stop()
    return time.monotonic() - t0


async def drain(settings: Settings, expected: set[str], worker: Worker, timeout: float = 150
                ) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while True:
        out = await collect(settings)
        if expected <= accounted(out):
            await asyncio.sleep(2)  # a preference record trails its SFT twin
            return await collect(settings)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        assert time.monotonic() < deadline, (
            f"{len(expected - accounted(out))} unaccounted\n{worker.log_tail()}")
        await asyncio.sleep(1)


def live_settings(broker: str, sim_url: str) -> Settings:
    # every no-op example gets its no-edit record, so a small corpus yields enough records
    return run_settings(broker, sim_url, samples=4, quiescence_ms=QUIESCENCE_MS,
                        idle_tick_ms=300, log_level="warn", noop_keep_fraction=1.0)


@pytest.fixture(scope="session")
def live_run(kafka_broker: BrokerHandle, simulator: Simulator,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    settings = live_settings(kafka_broker.bootstrap, simulator.url)
    # the stdlib splicer (load-test traces): the export tests split by repository and need
    # several; real history comes from one repository, which lands in one split
    events = generate_events(GenerateConfig(seed=21, sessions=5, predictions_per_session=3,
                                            splice=True))
    expected = expected_predictions([orjson.dumps(e) for e in events], settings)
    stalls = stall_points(events, expected)
    worker = Worker(settings, tmp_path_factory.mktemp("live") / "worker.log")

    async def go() -> LiveRun:
        await ensure_topics(settings)
        worker.start()
        await wait_group_stable(settings, worker)
        seconds = await paced_feed(settings, events, stalls)
        outputs = await drain(settings, expected, worker)
        return LiveRun(settings, events, expected, outputs, seconds,
                       [events[i]["request_id"] for i in sorted(stalls)])

    try:
        yield asyncio.run(go())
    finally:
        worker.stop()
