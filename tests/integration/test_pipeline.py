"""The whole pipeline on the embedded broker: events in, records out, nothing lost."""

from __future__ import annotations

import asyncio
import base64
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

import schemas
from agents.runtime import ROUTED_HEADER
from editstream.demo import accounted, collect, expected_predictions, settled_examples
from editstream.infra.broker import BrokerHandle
from editstream.sessions.generate import GenerateConfig, generate_events
from editstream.topics.kafka_io import ensure_topics, produce_events, read_to_end
from streams.ingest import Discarded, decode_event, screen_settled
from streams.settle import batch_item, settle_events
from tests.integration.conftest import Simulator, Worker, run_settings

pytestmark = pytest.mark.broker

POISON = [
    b"{this is not json",
    b'{"v": 1, "type": "edit", "session_id": "poison", "ts_ms": "soon", '
    b'"can_collect_data": true}',
    b'\xff\xfe{"v": 1}',
    orjson.dumps({"v": 1, "type": "outcome", "session_id": "poison", "ts_ms": 1,
                  "can_collect_data": True, "request_id": "never-predicted",
                  "outcome": "accepted", "was_shown": True}),
]


async def wait_accounted(settings: Any, expected: set[str], worker: Worker,
                         timeout: float = 150) -> dict[str, list[dict[str, Any]]]:
    deadline = time.monotonic() + timeout
    while True:
        outputs = await collect(settings)
        missing = expected - accounted(outputs)
        if not missing:
            await asyncio.sleep(1)  # let a trailing preference record land
            return await collect(settings)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(missing)} unaccounted, e.g. {sorted(missing)[:3]}\n"
                                 + worker.log_tail())
        await asyncio.sleep(1)


async def test_pipeline_end_to_end(tansu: BrokerHandle, simulator: Simulator,
                                   workers: list[Worker], tmp_path: Path) -> None:
    settings = run_settings(tansu.bootstrap, simulator.url)
    events = generate_events(GenerateConfig(seed=11, sessions=8, predictions_per_session=4))
    lines = [orjson.dumps(e) for e in events] + POISON
    expected = expected_predictions(lines, settings)
    await ensure_topics(settings)
    workers.append(Worker(settings, tmp_path / "worker.log").start())
    await produce_events(settings, lines, flush=True)
    out = await wait_accounted(settings, expected, workers[0])

    # every prediction is accounted for exactly once: records or a rejection, never both
    with_records = {r["request_id"] for r in out["training-records"]}
    rejected = {r["request_id"] for r in out["rejected-examples"]}
    assert with_records & rejected == set()
    assert expected <= with_records | rejected | accounted(out)
    assert with_records and rejected

    # training records: valid, unique ids, SFT always, preference where a rejected exists
    ids = [r["id"] for r in out["training-records"]]
    assert len(ids) == len(set(ids))
    for rec in out["training-records"]:
        assert schemas.errors("training-records", rec) == []
    kinds = {r["format"] for r in out["training-records"]}
    assert "sft" in kinds
    for rec in out["rejected-examples"]:
        assert schemas.errors("rejected-examples", rec) == []
    for rec in out["scored-examples"]:
        assert schemas.errors("scored-examples", rec) == []
        assert len(rec["scores"]) == settings.samples

    # poison input: each line in the DLQ with a reason, nothing crashed
    dlq = out["edit-events-dlq"]
    reasons = sorted(r["reason"] for r in dlq)
    assert reasons.count("invalid_json") == 1
    assert reasons.count("invalid_utf8") == 1
    assert reasons.count("schema") == 1
    # outcomes of predictions that privacy dropped are discarded with them (privacy follows
    # the prediction); only the outcome of a request never seen is an unknown request
    followers = sum(1 for e in events if e["type"] == "outcome" and e["can_collect_data"]
                    and e["request_id"] not in expected)
    assert followers >= 1
    unknown = [r for r in dlq if r["reason"] == "unknown_request"]
    assert len(unknown) == 1 and b"never-predicted" in base64.b64decode(
        unknown[0]["original_b64"])
    for rec in dlq:
        assert schemas.errors("dlq", rec) == []

    # privacy: no opted-out session or disabled path reaches any topic
    private = {e["session_id"] for e in events if not e["can_collect_data"]}
    for name, recs in out.items():
        for rec in recs:
            blob = orjson.dumps(rec)
            assert not any(sid.encode() in blob for sid in private), name

    # each rejection is written once, by the stage that decided it
    rejection_ids = [r["request_id"] for r in out["rejected-examples"]]
    assert len(rejection_ids) == len(set(rejection_ids))
    await _upgrade_case(settings, out, workers[0])

    # a graceful stop closes the model clients' connection pools (aiohttp warns otherwise)
    workers[0].stop()
    assert "Unclosed" not in workers[0].log_path.read_text(errors="replace")


async def _upgrade_case(settings: Any, out: dict[str, list[dict[str, Any]]],
                        worker: Worker) -> None:
    """An out-of-band scored record the score stage wrote (with its routing header) is not
    rejected again by distill; one written by a version before the score stage rejected
    (no header, still on the topic at an upgrade) is rejected by distill, once."""
    band_out = next(r for r in out["scored-examples"]
                    if r["band"] != "ideal" and r["example"]["settled_region"]
                    != r["example"]["base_region"] and not r.get("unparsable_samples"))

    def renamed(rid: str) -> bytes:
        return orjson.dumps({**band_out, "request_id": rid,
                             "example": {**band_out["example"], "request_id": rid}})

    routed, legacy = "upgrade-routed", "upgrade-legacy"
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker)
    await producer.start()
    try:  # one partition, in this order: when legacy's rejection is out, routed was handled
        topic = settings.topic("scored-examples")
        await producer.send_and_wait(topic, renamed(routed), key=routed.encode(), partition=0,
                                     headers=[(ROUTED_HEADER, b"score")])
        await producer.send_and_wait(topic, renamed(legacy), key=legacy.encode(), partition=0)
    finally:
        await producer.stop()
    deadline = time.monotonic() + 60
    while True:
        rejected = [r for r in (await collect(settings))["rejected-examples"]
                    if r["request_id"] in (routed, legacy)]
        if rejected or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert [(r["request_id"], r["stage"], r["reason"]) for r in rejected] == [
        (legacy, "score", f"band_{band_out['band']}")], worker.log_tail()


async def test_live_settling_equals_offline_settle_events(
        tansu: BrokerHandle, simulator: Simulator, workers: list[Worker], tmp_path: Path
) -> None:
    """The agent and `settle_events` are one core: feed the topic as the worker saw it
    (partition order, including its idle ticks) offline, and the records are identical
    (those on settled-examples and those inside the settle stage's rejections)."""
    settings = run_settings(tansu.bootstrap, simulator.url, samples=2)
    events = generate_events(GenerateConfig(seed=5, sessions=6, predictions_per_session=3))
    lines = [orjson.dumps(e) for e in events]
    expected = expected_predictions(lines, settings)
    await ensure_topics(settings)
    workers.append(Worker(settings, tmp_path / "worker.log").start())
    await produce_events(settings, lines, flush=True)
    out = await wait_accounted(settings, expected, workers[0])

    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    async for rec in read_to_end(settings.broker, settings.topic("edit-events")):
        item = batch_item(decode_event(rec.value, settings))  # the same ingest as the worker
        if item is not None:
            by_partition[rec.partition].append(item)
    offline = {}
    for evs in by_partition.values():
        for rec in settle_events(evs, quiescence_ms=settings.quiescence_ms,
                                 ttl_ms=settings.ttl_ms, flush=False):
            screened = screen_settled(rec, settings)
            if not isinstance(screened, Discarded):
                offline[rec["request_id"]] = screened
    # the settle stage's own rejections (ttl, context_lost) carry the settled example
    assert {r["settle_reason"] for r in out["settled-examples"]}.isdisjoint(
        settings.reject_settle_reasons)
    live = {rid: {k: v for k, v in r.items() if k != "pipeline_version"}
            for rid, r in settled_examples(out).items()}
    assert live.keys() == offline.keys()
    for rid, rec in live.items():
        assert orjson.dumps(rec) == orjson.dumps(offline[rid]), rid
