"""The privacy corpus written straight to `edit-events` (no gateway) through the whole pipeline.

Editors may bypass the gateway. The worker's ingest gives the same verdicts (one function for
both), so no canary of a private event may reach any topic of the run (internal ones and
changelogs included), the worker's log or the exported dataset; and the outcomes of
predictions discarded for privacy are discarded with them, so the DLQ's `unknown_request`
holds only requests that were never seen.
"""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from editstream.dataset.export import export
from editstream.demo import expected_predictions
from editstream.infra.broker import BrokerHandle
from editstream.topics.kafka_io import ensure_topics, produce_events, read_to_end
from streams.ingest import Discarded, decode_event
from tests.integration.conftest import Simulator, Worker, run_settings
from tests.integration.privacy_corpus import privacy_corpus
from tests.integration.test_pipeline import wait_accounted

pytestmark = pytest.mark.broker

ORPHAN = {"v": 1, "type": "outcome", "session_id": "orphan", "ts_ms": 1,
          "can_collect_data": True, "request_id": "never-predicted", "outcome": "accepted",
          "was_shown": True}


def _readable(value: bytes | None) -> bytes:
    """A record's value with the original bytes a dead letter carries (base64) decoded."""
    if not value:
        return b""
    try:
        rec = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    if isinstance(rec, dict) and isinstance(rec.get("original_b64"), str):
        return value + b"\t" + base64.b64decode(rec["original_b64"])
    return value


async def test_privacy_corpus_straight_to_kafka_leaves_no_canary(
        tansu: BrokerHandle, simulator: Simulator, workers: list[Worker], tmp_path: Path
) -> None:
    events, _, canaries = privacy_corpus()
    assert len(events) >= 10_000 and len(canaries) > 1000
    settings = run_settings(tansu.bootstrap, simulator.url, samples=4, adaptive_sampling=False)
    lines = [orjson.dumps(e) for e in events] + [orjson.dumps(ORPHAN)]
    expected = expected_predictions(lines, settings)
    verdicts = [decode_event(line, settings) for line in lines]
    discarded_ids = {v.request_id for v in verdicts if isinstance(v, Discarded)
                     and v.request_id is not None}
    assert discarded_ids - expected, "the corpus discards some predictions"
    await ensure_topics(settings)
    worker = Worker(settings, tmp_path / "worker.log").start()
    workers.append(worker)
    await produce_events(settings, lines, flush=True)
    out = await wait_accounted(settings, expected, worker, timeout=400)
    assert out["training-records"], "real events still become training data"

    # Every topic of the run, keys and values, internal topics and changelogs included.
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.broker)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics()
                        if t.startswith(settings.topic_prefix) or settings.app_id in t)
    finally:
        await admin.close()
    assert settings.topic("settled-examples") in topics and len(topics) >= 8
    blobs: dict[str, bytes] = {}
    for topic in topics:
        if topic == settings.topic("edit-events"):
            continue  # the input itself, written by the "editor"
        blobs[topic] = b"\n".join([(r.key or b"") + b"\t" + _readable(r.value)
                                   async for r in read_to_end(settings.broker, topic)])
    export_dir = tmp_path / "dataset"
    await export(settings, export_dir)
    for path in export_dir.rglob("*"):
        if path.is_file():
            blobs[f"export:{path.name}"] = path.read_bytes()
    worker.stop()
    blobs["worker.log"] = worker.log_path.read_bytes()
    leaks = {where: [c for c in canaries if c.encode() in blob][:3]
             for where, blob in blobs.items()}
    assert {k: v for k, v in leaks.items() if v} == {}

    # Only the request never seen is an unknown request; the outcomes that followed a
    # discarded prediction were discarded with it (none of them in the DLQ).
    dlq = out["edit-events-dlq"]
    unknown = [orjson.loads(base64.b64decode(r["original_b64"]))["request_id"]
               for r in dlq if r["reason"] == "unknown_request"]
    assert unknown == ["never-predicted"]
    followers = [e for e in events if e["type"] == "outcome" and e.get("can_collect_data")
                 and e["request_id"] in discarded_ids - expected]
    assert followers, "the corpus has outcomes of discarded predictions"
    assert not any(orjson.loads(base64.b64decode(r["original_b64"])).get("request_id")
                   in discarded_ids - expected for r in dlq)
