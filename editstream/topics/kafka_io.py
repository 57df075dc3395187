"""Plain aiokafka helpers for the command-line tools (produce, read a topic to its end).

The worker moves records with Faust (and its settle runner with aiokafka); tools that feed or
drain topics use aiokafka directly, with the same durability settings (acks=all, idempotent
producer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from agents.kafka import start_producer
from agents.kafka_security import Cluster, kafka_client_config
from schemas.topics import TOPICS, settle_changelog
from streams.settings import Settings


async def ensure_topics(settings: Settings) -> None:
    """Create the pipeline topics with the configured partitions (idempotent), and the settle
    runner's compacted state changelog."""
    admin = AIOKafkaAdminClient(**kafka_client_config(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        rf = settings.replication_factor
        new = [NewTopic(settings.topic(t), settings.partitions, rf) for t in TOPICS
               if settings.topic(t) not in existing]
        changelog = settle_changelog(settings)
        if changelog not in existing:
            new.append(NewTopic(changelog, settings.partitions, rf,
                                topic_configs={"cleanup.policy": "compact"}))
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
            await _wait_for_leaders(admin, settings, [t.name for t in new])
    finally:
        await admin.close()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, bootstrap: Cluster, names: list[str],
                            timeout_s: float = 30.0) -> None:
    """Return once every partition of the new topics answers as its leader (or after
    `timeout_s`): Apache Kafka elects them a moment after CreateTopics answers, and a
    producer that comes first gets NotLeaderForPartition and logs a warning for each retry.
    Metadata names the leader before the leader serves, so the wait asks each partition for
    its end offset (a request only its leader answers; aiokafka retries it quietly)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    tps: list[TopicPartition] = []
    while loop.time() < deadline and not tps:
        topics = await admin.describe_topics(names)
        if all(t["error_code"] == 0 and t["partitions"]
               and all(p["leader"] >= 0 for p in t["partitions"]) for t in topics):
            tps = [TopicPartition(t["topic"], p["partition"]) for t in topics
                   for p in t["partitions"]]
        else:
            await asyncio.sleep(0.2)
    if not tps:
        return
    consumer = AIOKafkaConsumer(**kafka_client_config(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(consumer.end_offsets(tps), max(1.0, deadline - loop.time()))
    finally:
        await consumer.stop()
def event_key(raw: bytes) -> bytes | None:
    """Events are keyed by session_id; unparsable lines go unkeyed (the DLQ will get them)."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    sid = obj.get("session_id") if isinstance(obj, dict) else None
    return sid.encode() if isinstance(sid, str) else None


async def produce_events(settings: Settings, lines: Iterable[bytes], *,
                         flush: bool = False) -> int:
    """Send raw event lines to `edit-events`; with `flush`, end every partition with a
    control flush so all open predictions settle (finite inputs: demo, backfill)."""
    topic = settings.topic("edit-events")
    prod = await start_producer(settings)
    n = 0
    try:
        pending = []
        for raw in lines:
            pending.append(await prod.send(topic, raw, key=event_key(raw)))
            n += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        if flush:
            await send_flush(prod, topic, await prod.partitions_for(topic))
    finally:
        await prod.stop()
    return n


async def send_flush(prod: AIOKafkaProducer, topic: str, partitions: Iterable[int]) -> None:
    control = orjson.dumps({"v": 1, "type": "control", "op": "flush",
                            "session_id": "__control__", "ts_ms": 0,
                            "can_collect_data": False})
    await asyncio.gather(*[await prod.send(topic, control, key=b"__control__", partition=p)
                           for p in sorted(partitions)])


async def read_to_end(bootstrap: Cluster, topic: str, *, timeout_s: float = 30.0,
                      isolation_level: str = "read_committed") -> AsyncIterator[Any]:
    """Every record of `topic` from the beginning up to (at least) the end offsets seen at
    start."""
    # read_committed: under exactly-once, records of aborted transactions (a killed worker's
    # half-done work) are not output and must not be counted as such.
    consumer = AIOKafkaConsumer(**kafka_client_config(bootstrap), enable_auto_commit=False,
                                isolation_level=isolation_level,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while remaining and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                # No cut at ends[tp]: Tansu reports a partition's end as the last batch's
                # base offset + 1, so the tail of that batch lies "past" it. A fetch always
                # returns whole batches, so keeping every record fetched reads them all.
                for rec in records:
                    yield rec
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
