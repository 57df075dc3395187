"""Both Kafka clients of the gateway (`editstream/gateway/sink.py`) on a real broker: every
record delivered, and each in the partition aiokafka's `DefaultPartitioner` picks for its key,
so a session keeps its partition whichever client the gateway runs with."""

from __future__ import annotations

import random
import uuid

import pytest
from aiokafka.partitioner import DefaultPartitioner

from editstream.gateway.sink import AiokafkaSink, LibrdkafkaSink, start_sink
from editstream.infra.broker import BrokerHandle, acreate_topics
from tests.integration.test_gateway import read_all

pytestmark = pytest.mark.timeout(120)


def session_keys(n: int, seed: int) -> list[bytes]:
    """Session-id-like keys, ASCII and not (murmur2 works on the key's bytes)."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_éß漢"
    return [("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))).encode()
            for _ in range(n)]


@pytest.mark.parametrize("kind", ["librdkafka", "aiokafka"])
async def test_sink_delivers_every_record_in_the_default_partitioners_partition(
        tansu: BrokerHandle, kind: str) -> None:
    topic = f"sink-{kind}-{uuid.uuid4().hex[:8]}"
    partitions = 5
    await acreate_topics(tansu.bootstrap, [topic], partitions=partitions)
    keys = session_keys(400, seed=7)
    records = [(k, b'{"i":%d}' % i) for i, k in enumerate(keys)]
    sink = await start_sink(kind, tansu.bootstrap)
    assert isinstance(sink, LibrdkafkaSink if kind == "librdkafka" else AiokafkaSink)
    try:
        # in a few requests, as the gateway sends them
        for i in range(0, len(records), 100):
            assert await sink.deliver(topic, records[i:i + 100], timeout_s=20)
        assert await sink.probe(5)
    finally:
        await sink.stop(5)
    got = await read_all(tansu.bootstrap, topic)
    assert sorted(r.value for r in got) == sorted(v for _, v in records)
    default = DefaultPartitioner()
    parts = list(range(partitions))
    for r in got:
        assert r.partition == default(r.key, parts, parts), r.key


async def test_librdkafka_sink_queues_what_does_not_fit_when_room_is_made(
        tansu: BrokerHandle) -> None:
    """A request larger than librdkafka's local queue: the records that did not fit are
    queued again once it drains, each exactly once, and the answer waits for all of them."""
    topic = f"sink-full-{uuid.uuid4().hex[:8]}"
    await acreate_topics(tansu.bootstrap, [topic], partitions=3)
    records = [(k, b'{"i":%d}' % i) for i, k in enumerate(session_keys(250, seed=8))]
    sink = await LibrdkafkaSink.start(tansu.bootstrap,
                                      extra={"queue.buffering.max.messages": 20})
    try:
        assert await sink.deliver(topic, records, timeout_s=30)
    finally:
        await sink.stop(5)
    got = await read_all(tansu.bootstrap, topic)
    assert sorted(r.value for r in got) == sorted(v for _, v in records)


async def test_librdkafka_sink_fails_without_a_broker() -> None:
    """Start-up raises an OSError (the gateway's serve loop retries it) when nobody answers."""
    with pytest.raises(OSError):
        await LibrdkafkaSink.start("127.0.0.1:1", timeout_s=1.0)


async def test_librdkafka_reports_go_on_after_a_failing_callback(tansu: BrokerHandle) -> None:
    """The polling thread survives an exception in a delivery callback: later requests
    still get their answer (a dead poller would turn every request into a 503)."""
    topic = f"sink-cb-{uuid.uuid4().hex[:8]}"
    await acreate_topics(tansu.bootstrap, [topic], partitions=2)
    sink = await LibrdkafkaSink.start(tansu.bootstrap)

    def boom(err: object, msg: object) -> None:
        raise RuntimeError("callback failed")

    try:
        sink._producer.produce(topic, b"x", b"k", on_delivery=boom)
        assert await sink.deliver(topic, [(b"k", b"y")], timeout_s=20)
        assert await sink.deliver(topic, [(b"k", b"z")], timeout_s=20)
    finally:
        await sink.stop(5)
