"""The stage runner (agents/stages.py) on real brokers, through `editstream worker` processes.

- Tansu (at_least_once): records finish out of order (a jittery model, sample concurrency 8)
  yet every stage writes its outputs in its source partition's offset order; a handler that
  raises dead-letters exactly its record and the pipeline goes on.
- Tansu: the runner writes each partition's finished records at most once per
  `stage_commit_interval_ms`, however they finish (`editstream_stage_commits_total`).
- Apache Kafka (exactly_once): a worker killed -9 again and again while the stages work
  leaves every example accounted for and no output twice (read_committed): a record's
  outputs and its offset commit in one transaction. The eval stage (its own runner and
  group) and settle's scorecard records too: one record per example and candidate.
"""

from __future__ import annotations

import asyncio
import base64
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from editstream.demo import accounted, collect, expected_predictions
from editstream.infra.broker import BrokerHandle, free_port
from editstream.infra.process import left_behind
from editstream.sessions.generate import GenerateConfig, generate_events
from editstream.topics.kafka_io import ensure_topics, produce_events, read_to_end
from schemas.topics import app_group
from streams.settings import Settings
from tests.integration.conftest import Simulator, Worker, run_settings
from tests.integration.kafka_fixtures import drain

pytest_plugins = ("tests.integration.kafka_fixtures",)
pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def jittery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """Model latency 20–100 ms: records of one partition finish in any order."""
    sim = Simulator(tmp_path_factory.mktemp("jittery"), "--latency-ms", "60",
                    "--jitter-ms", "40")
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    """Model latency 200–400 ms: the stages work for many seconds, so kills land mid-work."""
    sim = Simulator(tmp_path_factory.mktemp("slow"), "--latency-ms", "300", "--jitter-ms", "100")
    yield sim
    sim.stop()


async def start_run(broker: BrokerHandle, sim: Simulator, tmp: Path, seed: int, sessions: int,
                    per_session: int, **kw: Any
                    ) -> tuple[Settings, list[bytes], set[str], Worker]:
    """Settings, corpus, the predictions it must account for, and a started worker."""
    s = run_settings(broker.bootstrap, sim.url, samples=4, idle_tick_ms=600_000, **kw)
    await ensure_topics(s)
    events = generate_events(GenerateConfig(seed=seed, sessions=sessions,
                                            predictions_per_session=per_session))
    lines = [orjson.dumps(e) for e in events]
    return s, lines, expected_predictions(lines, s), Worker(s, tmp / "worker.log").start()


async def records(settings: Settings, name: str) -> list[Any]:
    return [r async for r in read_to_end(settings.broker, settings.topic(name))]


async def send_raw(settings: Settings, topic: str, partition: int, value: bytes) -> int:
    """Write `value` to one partition of a stage topic; its offset."""
    prod = AIOKafkaProducer(bootstrap_servers=settings.broker)
    await prod.start()
    try:
        meta = await prod.send_and_wait(settings.topic(topic), value, key=b"poison",
                                        partition=partition)
        return int(meta.offset)
    finally:
        await prod.stop()


def in_source_order(source: list[Any], output: list[Any]) -> None:
    """Per partition, the request ids on `output` come in the order of `source`."""
    src: dict[int, list[str]] = defaultdict(list)
    for r in source:
        src[r.partition].append(orjson.loads(r.value)["request_id"])
    out: dict[int, list[str]] = defaultdict(list)
    for r in output:
        out[r.partition].append(orjson.loads(r.value)["request_id"])
    assert out, "nothing written"
    for p, ids in out.items():
        assert len(ids) == len(set(ids)), f"partition {p}: an output twice"
        assert [rid for rid in src[p] if rid in set(ids)] == ids, f"partition {p}"


async def test_out_of_order_completion_writes_in_offset_order_and_a_crash_is_one_dlq(
        tansu: BrokerHandle, jittery: Simulator, tmp_path: Path) -> None:
    s, lines, expected, worker = await start_run(
        tansu, jittery, tmp_path, 55, 8, 3, processing_guarantee="at_least_once",
        sample_concurrency=8)
    try:
        # a record each of two stages cannot handle: JSON without the fields they need
        # (score raises in its CPU pool process, the error comes back to the loop)
        poison = {("sample", "KeyError"): ("settled-examples", 1, b'{"request_id": "boom-s"}'),
                  ("score", "KeyError"): ("student-samples", 2, b'{"request_id": "boom"}')}
        where = {key: (topic, p, await send_raw(s, topic, p, value))
                 for key, (topic, p, value) in poison.items()}
        await produce_events(s, lines, flush=True)
        out = await drain(s, expected, worker, timeout=240)
    finally:
        worker.stop()
    dead = out["pipeline-dlq"]
    assert len(dead) == len(poison), dead
    got = {(d["stage"], d["detail"]): (d["source"]["topic"], d["source"]["partition"],
                                       d["source"]["offset"], base64.b64decode(d["original_b64"]))
           for d in dead}
    assert {k: v[:3] for k, v in got.items()} == {
        k: (s.topic(t), p, off) for k, (t, p, off) in where.items()}
    assert {k: v[3] for k, v in got.items()} == {k: v for k, (_, _, v) in poison.items()}
    assert {d["reason"] for d in dead} == {"internal_error"}
    settled = await records(s, "settled-examples")
    samples = await records(s, "student-samples")
    scored = await records(s, "scored-examples")
    real = [r for r in samples if r.value != poison["score", "KeyError"][2]]
    in_source_order([r for r in settled if r.value != poison["sample", "KeyError"][2]], real)
    in_source_order(real, scored)


def commits(port: int) -> float:
    """`editstream_stage_commits_total` on a worker's /metrics."""
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("editstream_stage_commits_total "):
            return float(line.split()[1])
    raise AssertionError("no editstream_stage_commits_total")


async def test_finished_records_are_written_at_most_once_per_interval(
        tansu: BrokerHandle, jittery: Simulator, tmp_path: Path) -> None:
    """Records finish one by one (a jittery model): with a 3 s interval each partition's
    runner writes at most once per 3 s, not once per record (~150 records here)."""
    interval_s = 3.0
    s, lines, expected, worker = await start_run(
        tansu, jittery, tmp_path, 56, 16, 4, processing_guarantee="at_least_once", partitions=2,
        sample_concurrency=8, stage_commit_interval_ms=int(interval_s * 1000),
        metrics_port=free_port())
    started = time.monotonic()
    try:
        await produce_events(s, lines, flush=True)
        out = await drain(s, expected, worker, timeout=240)
        elapsed = time.monotonic() - started
        written = commits(s.metrics_port)
    finally:
        worker.stop()
    handled = sum([len(await records(s, name))
                   for name in ("settled-examples", "student-samples", "scored-examples",
                                "repair")])
    assert expected <= accounted(out)
    assert handled > 2 * s.partitions * (elapsed / interval_s + 1), "too few records to tell"
    assert 0 < written <= s.partitions * (elapsed / interval_s + 1), (written, elapsed)


async def kill_mid_stage(worker: Worker, settings: Settings, rng: random.Random,
                         expected: set[str]) -> bool:
    """Kill -9 once the restarted worker has written stage outputs again; whether work was
    left (some prediction not yet accounted for) when it died."""
    names = ("student-samples", "scored-examples", "training-records")

    async def written() -> int:
        return sum([len(await records(settings, name)) for name in names])

    start = await written()
    deadline = time.monotonic() + 90
    while await written() == start and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
    await asyncio.sleep(rng.uniform(0.2, 1.0))
    worker.kill()
    return not expected <= accounted(await collect(settings))


async def test_kill_9_in_the_stages_loses_and_duplicates_nothing(
        kafka_broker: BrokerHandle, slow: Simulator, tmp_path: Path) -> None:
    # the eval stage too (its own group and transactions): every example, a slow candidate
    s, lines, expected, worker = await start_run(
        kafka_broker, slow, tmp_path, 21, 20, 5, processing_guarantee="exactly_once",
        session_timeout_s=8.0, eval_all=True, candidates=(f"slow={slow.url}",))
    rng = random.Random(5)
    mid_work = 0
    try:
        await produce_events(s, lines, flush=True)
        for _ in range(3):
            mid_work += await kill_mid_stage(worker, s, rng, expected)
            worker.start()
        out = await drain(s, expected, worker, timeout=240)
        settled = {r.key for r in await records(s, "settled-examples")}
        deadline = time.monotonic() + 120
        while {r.key for r in await records(s, "eval-results")} != settled:
            assert time.monotonic() < deadline, "eval-results incomplete\n" + worker.log_tail()
            await asyncio.sleep(1)
    finally:
        worker.stop()
    assert mid_work >= 2, "the kills must land while the stages still have work"
    assert expected <= accounted(out)
    keys = {name: Counter(r.key for r in await records(s, name))
            for name in ("student-samples", "scored-examples", "training-records",
                         "rejected-examples", "pipeline-dlq")}
    twice = {name: [k for k, n in c.items() if n > 1] for name, c in keys.items()}
    assert twice == {name: [] for name in keys}
    assert left_behind(s) == [], "a killed worker's CPU pool outlived it"
    # eval-results (read_committed): each example's noop, served and candidate records once
    evals = Counter((r.key, orjson.loads(r.value)["candidate"])
                    for r in await records(s, "eval-results"))
    assert set(evals.values()) == {1} and len(evals) == 3 * len(settled)
    # the live scorecard, written with its settled example: once per served output
    served = {r.key for r in await records(s, "settled-examples")
              if isinstance(orjson.loads(r.value).get("output"), str)}
    assert served and Counter(r.key for r in await records(s, "scorecard")) == Counter(served)
    # every settled example was sampled or left at sample (rejected, re-queued or dead)
    sampled = set(keys["student-samples"])
    left = {r.key for r in await records(s, "rejected-examples")}
    retried = {r.key for r in await records(s, "model-retry")}
    assert settled <= sampled | left | retried


async def commit_as(settings: Settings, group: str, offsets: dict[Any, int]) -> None:
    """Commit `offsets` for `group` without joining it (as a stopped worker left them)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_an_upgrade_starts_where_the_faust_group_left_off(
        kafka_broker: BrokerHandle, jittery: Simulator, tmp_path: Path) -> None:
    """The Faust agents' group `<app_id>` committed `settled-examples` up to some offset; the
    stage runner's new group starts there, not at the earliest offset (records dead-letter
    here, so which ones it handled shows in pipeline-dlq)."""
    s = run_settings(kafka_broker.bootstrap, jittery.url, processing_guarantee="exactly_once")
    await ensure_topics(s)
    old = {p: [await send_raw(s, "settled-examples", p, b'{"request_id": "old-%d-%d"}' % (p, k))
               for k in range(3)] for p in range(s.partitions)}
    await commit_as(s, app_group(s), {TopicPartition(s.topic("settled-examples"), p):
                                      offs[-1] + 1 for p, offs in old.items()})
    for p in range(s.partitions):
        for k in range(2):
            await send_raw(s, "settled-examples", p, b'{"request_id": "new-%d-%d"}' % (p, k))
    new = {f"new-{p}-{k}" for p in range(s.partitions) for k in range(2)}
    worker = Worker(s, tmp_path / "upgrade.log").start()
    try:
        await drain(s, new, worker, timeout=120)
        await asyncio.sleep(3)
        dead = [orjson.loads(base64.b64decode(r["original_b64"]))["request_id"]
                for r in (await collect(s))["pipeline-dlq"]]
    finally:
        worker.stop()
    assert sorted(dead) == sorted(new)


@pytest.fixture
def healthy(tmp_path: Path) -> Iterator[Simulator]:
    """A simulator of this test's own: its outage must not reach other tests."""
    sim = Simulator(tmp_path, "--admin", "--latency-ms", "20")
    yield sim
    sim.stop()


async def set_topic_config(settings: Settings, topic: str, configs: dict[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC,
                                                  settings.topic(topic), configs=configs)])
    finally:
        await admin.close()


def keep_running(worker: Worker, exits: list[int | None]) -> None:
    """Restart a worker that exited by itself, as a supervisor would; note its status."""
    if worker.proc is not None and worker.proc.poll() is not None:
        exits.append(worker.proc.returncode)
        worker.start()


async def test_a_retried_example_whose_outputs_are_refused_is_redone_not_acknowledged(
        kafka_broker: BrokerHandle, healthy: Simulator, tmp_path: Path) -> None:
    """Issue 28: the chaos run lost examples re-queued after a model outage. Their
    `model-retry` records were committed, their samples never written: the retry stage ran
    on Faust, whose sends are not awaited, and aiokafka commits a transaction even when a
    batch of it failed (a produce refused after the broker restarts). Here the broker
    refuses the retried examples' outputs deterministically: every example goes through
    `model-retry` (an outage while they settle), and while they are retried `student-samples`
    accepts no record of their size. The outputs must be written with the retry's offset or
    not at all: the worker exits without committing, and once the topic takes them again
    every prediction is accounted for, none twice."""
    s, lines, expected, worker = await start_run(
        kafka_broker, healthy, tmp_path, 61, 6, 3, processing_guarantee="exactly_once",
        model_max_retries=0, retry_attempts=20, retry_delay_ms=1000, session_timeout_s=8.0)
    sim = httpx.AsyncClient(base_url=healthy.url, timeout=10)

    async def outage(seconds: float) -> None:
        (await sim.post("/admin/chaos", json={"outage_s": seconds})).raise_for_status()

    exits: list[int | None] = []
    try:
        await outage(3)
        await produce_events(s, lines, flush=True)
        # the outage lasts until every settled example has been re-queued at least once
        deadline = time.monotonic() + 120
        before: set[bytes] = set()
        while True:
            await outage(3)
            settled = {r.key for r in await records(s, "settled-examples")}
            retried = {r.key for r in await records(s, "model-retry")}
            if settled and settled == before and settled <= retried:
                break
            before = settled
            assert time.monotonic() < deadline, (len(settled), len(retried))
            await asyncio.sleep(2)
        await set_topic_config(s, "student-samples", {"max.message.bytes": "256"})
        await asyncio.sleep(3.5)  # the outage ends
        # the retries come due, the model answers, the broker refuses their samples
        refused_until = time.monotonic() + 20
        while time.monotonic() < refused_until:
            keep_running(worker, exits)
            await asyncio.sleep(0.5)
        await set_topic_config(s, "student-samples", {"max.message.bytes": "1048588"})
        deadline = time.monotonic() + 240
        while not expected <= accounted(await collect(s)):
            keep_running(worker, exits)
            assert time.monotonic() < deadline, (
                f"{len(expected - accounted(await collect(s)))} predictions lost; worker "
                f"exits {exits}\n{worker.log_tail()}")
            await asyncio.sleep(1)
    finally:
        await sim.aclose()
        worker.stop()
    assert exits and set(exits) == {75}, exits  # left on the refused write, said why
    assert "Kafka client failure" in (tmp_path / "worker.log").read_text()
    twice = {name: [k for k, n in Counter(r.key for r in await records(s, name)).items()
                    if n > 1]
             for name in ("student-samples", "scored-examples", "training-records")}
    assert twice == {name: [] for name in twice}
