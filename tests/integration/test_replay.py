"""Replay and reset-offsets on Apache Kafka.

The live run (`kafka_fixtures.live_run`) is fed in real time with stalls, so its worker writes
idle ticks into edit-events that decide some settles. A replay of that topic at full speed, in
its own namespace, must write the same settled examples and training records byte for byte,
and must leave the live run alone.
"""

from __future__ import annotations

import argparse
import asyncio
import io
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from editstream import replay
from editstream.infra.broker import BrokerHandle
from editstream.topics import offsets
from editstream.topics.kafka_io import read_to_end
from editstream.topics.offsets import parse_when
from schemas.topics import STAGE_SOURCES, settle_group, stages_group
from streams.ingest import Accepted, decode_event
from streams.settings import Settings
from streams.settle import settle_events

if TYPE_CHECKING:
    from tests.integration.kafka_fixtures import LiveRun

pytest_plugins = ("tests.integration.kafka_fixtures",)
pytestmark = [pytest.mark.broker, pytest.mark.kafka]


def by_key(records: list[tuple[bytes | None, bytes | None]]) -> dict[bytes, bytes]:
    """key → value bytes; a key seen twice must carry the same bytes (deterministic)."""
    out: dict[bytes, bytes] = {}
    for k, v in records:
        assert k is not None and v is not None
        assert out.setdefault(k, v) == v, f"key {k!r} has two different values"
    return out


async def topic_by_key(settings: Settings, name: str) -> dict[bytes, bytes]:
    return by_key([(r.key, r.value) async for r in
                   read_to_end(settings.broker, settings.topic(name))])


async def end_offsets(settings: Settings) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.broker)
    await consumer.start()
    try:
        tps = [tp for name in replay.CONSUMED + replay.WATCHED
               for tp in await offsets.partitions_of(consumer, settings.topic(name))]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {tp: m.offset for tp, m in
                (await admin.list_consumer_group_offsets(group)).items()}
    finally:
        await admin.close()


def parse(add: Any, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add(parser)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- replay


async def test_replay_of_edit_events_is_byte_identical(live_run: LiveRun) -> None:
    live = live_run.settings
    source = [(r.partition, r.value) async for r in
              read_to_end(live.broker, live.topic("edit-events"))]
    ticks = [v for _, v in source if b'"op":"tick"' in v]
    assert ticks, "the live feed should have produced idle ticks"

    # the ticks decided something: settling the events alone (no ticks) differs
    by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for partition, raw in source:
        verdict = decode_event(raw, live)
        if isinstance(verdict, Accepted) and verdict.event.get("op") != "tick":
            by_partition[partition].append(verdict.event)
    tickless = {r["request_id"]: r for evs in by_partition.values()
                for r in settle_events(evs, quiescence_ms=live.quiescence_ms,
                                       ttl_ms=live.ttl_ms)}
    live_settled = {r["request_id"]: r for r in live_run.outputs["settled-examples"]}
    changed = [rid for rid in live_run.stalls
               if tickless[rid]["settled_at_ms"] != live_settled[rid]["settled_at_ms"]
               or tickless[rid]["settled_region"] != live_settled[rid]["settled_region"]]
    assert changed, "a stall should have let a tick settle a prediction early"

    before_ends = await end_offsets(live)
    before_group = await committed(live.broker, live.app_id)
    before_settle = await committed(live.broker, settle_group(live))
    assert before_settle, "the settle runner commits edit-events offsets in its own group"
    before_stages = await committed(live.broker, stages_group(live))
    assert {tp.topic for tp in before_stages} >= {live.topic("settled-examples")}, \
        "the stage runner commits the stage topics' offsets in its own group"
    out = io.StringIO()
    result = await replay.replay(live, live.topic("edit-events"), parse_when("earliest"),
                                 parse_when("latest"), progress=False, out=out)
    rs = result.settings
    assert rs is not None and rs.topic_prefix.startswith(f"{live.topic_prefix}replay-")
    assert rs.app_id.startswith(f"{live.app_id}-replay-")
    assert result.copied == len(source)
    assert result.expected == live_run.expected

    for name in ("settled-examples", "training-records"):
        live_bytes = await topic_by_key(live, name)
        replay_bytes = await topic_by_key(rs, name)
        assert replay_bytes.keys() == live_bytes.keys(), name
        for key, value in live_bytes.items():
            assert replay_bytes[key] == value, (name, key)
    live_rejected = {r["request_id"]: (r["stage"], r["reason"])
                     for r in live_run.outputs["rejected-examples"]}
    assert {r["request_id"]: (r["stage"], r["reason"])
            for r in result.outputs["rejected-examples"]} == live_rejected

    # the live run is untouched: no new records in its topics, its group's offsets as before
    assert await end_offsets(live) == before_ends
    assert await committed(live.broker, live.app_id) == before_group
    assert await committed(live.broker, settle_group(live)) == before_settle
    assert await committed(live.broker, stages_group(live)) == before_stages
    text = out.getvalue()
    assert "all accounted for" in text and rs.topic_prefix in text


async def test_replay_of_settled_examples_rescores_only(live_run: LiveRun) -> None:
    live = live_run.settings
    result = await replay.replay(live, live.topic("settled-examples"), parse_when("earliest"),
                                 parse_when("latest"), progress=False, out=io.StringIO())
    rs = result.settings
    assert rs is not None
    assert result.kind == "settled-examples"
    # nothing was settled again: the copy is the replay's settled-examples, as it was
    assert [r async for r in read_to_end(rs.broker, rs.topic("edit-events"))] == []
    assert await topic_by_key(rs, "settled-examples") == await topic_by_key(live,
                                                                          "settled-examples")
    assert await topic_by_key(rs, "training-records") == await topic_by_key(live,
                                                                          "training-records")


def test_replay_dry_run_prints_ranges_and_copies_nothing(
        live_run: LiveRun, capsys: pytest.CaptureFixture[str]) -> None:
    live = live_run.settings
    ns = parse(replay.add_arguments, [
        "--topic", "edit-events", "--from", "offset:5", "--to", "latest", "--dry-run",
        "--broker", live.broker, "--topic-prefix", live.topic_prefix, "--app-id", live.app_id])
    assert replay.main_replay(ns) == 0
    text = capsys.readouterr().out
    ranges = asyncio.run(replay.plan(live.broker, live.topic("edit-events"),
                                     parse_when("offset:5"), parse_when("latest")))
    for r in ranges:
        assert r.start == 5 or r.start == r.end  # clamped where a partition is shorter
        assert f"{r.partition:>9} {r.start:>10} {r.end:>10} {r.count:>8}" in text
    assert f"{sum(r.count for r in ranges):>8}" in text and "dry run" in text

    # a range in the future is empty; a time range resolves by record timestamps
    future = asyncio.run(replay.plan(live.broker, live.topic("edit-events"),
                                     parse_when("now"), parse_when("latest")))
    assert sum(r.count for r in future) == 0
    hour = asyncio.run(replay.plan(live.broker, live.topic("edit-events"),
                                   parse_when("1h"), parse_when("latest")))
    assert sum(r.count for r in hour) == sum(r.end for r in hour)  # all written this hour


# --------------------------------------------------------------------------- reset-offsets


async def _commit_as_group(bootstrap: str, group: str, topic: str, offset: int) -> None:
    """Give `group` committed offsets on `topic` without leaving a member behind."""
    consumer = offsets.new_consumer(bootstrap, group_id=group)
    await consumer.start()
    try:
        tps = await offsets.partitions_of(consumer, topic)
        consumer.assign(tps)
        await consumer.commit({tp: offset for tp in tps})
    finally:
        await consumer.stop()


def test_reset_offsets_dry_run_execute_and_refusal(
        live_run: LiveRun, kafka_broker: BrokerHandle,
        capsys: pytest.CaptureFixture[str]) -> None:
    live = live_run.settings
    topic = live.topic("edit-events")
    group = f"{live.app_id}-reset-test"
    asyncio.run(_commit_as_group(kafka_broker.bootstrap, group, topic, 3))
    common = ["--broker", kafka_broker.bootstrap, "--topic-prefix", live.topic_prefix]

    # dry run (the default): prints current → new, changes nothing
    ns = parse(offsets.add_arguments, ["--group", group, "--to", "earliest", *common])
    assert offsets.main_reset_offsets(ns) == 0
    text = capsys.readouterr().out
    assert "dry run" in text and topic in text
    for p in range(live.partitions):
        assert f"{topic:<40} {p:>9} {3:>10} {0:>10} {-3:>+8d}" in text
    assert set(asyncio.run(committed(kafka_broker.bootstrap, group)).values()) == {3}

    # --execute with a pipeline topic name and a time: the offsets the timestamps give
    ns = parse(offsets.add_arguments, ["--group", group, "--to", "latest",
                                       "--topic", "edit-events", "--execute", *common])
    assert offsets.main_reset_offsets(ns) == 0
    assert "committed" in capsys.readouterr().out
    got = asyncio.run(committed(kafka_broker.bootstrap, group))
    ranges = asyncio.run(replay.plan(live.broker, topic, parse_when("latest"),
                                     parse_when("latest")))
    assert got == {TopicPartition(topic, r.partition): r.end for r in ranges}

    # the live worker's group is active: refused, dry run or not, nothing committed
    before = asyncio.run(committed(kafka_broker.bootstrap, live.app_id))
    for extra in ([], ["--execute"]):
        ns = parse(offsets.add_arguments, ["--group", live.app_id, "--to", "earliest",
                                           *extra, *common])
        assert offsets.main_reset_offsets(ns) == 1
        err = capsys.readouterr().err
        assert "refused" in err and "active" in err and "member" in err
    assert asyncio.run(committed(kafka_broker.bootstrap, live.app_id)) == before


def test_reset_offsets_of_the_pipeline_moves_its_three_groups(
        live_run: LiveRun, kafka_broker: BrokerHandle,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without --group: edit-events in the settle runner's group, the stage topics and
    model-retry in the stage runner's, and what Faust's group committed (older versions);
    and refused while the live pipeline runs."""
    live = live_run.settings
    common = ["--broker", kafka_broker.bootstrap, "--topic-prefix", live.topic_prefix]
    for extra in ([], ["--execute"]):
        ns = parse(offsets.add_arguments, ["--app-id", live.app_id, "--to", "earliest",
                                           *extra, *common])
        assert offsets.main_reset_offsets(ns) == 1
        assert "refused" in capsys.readouterr().err

    # a stopped pipeline (no members): an app id whose three groups have offsets
    app = f"{live.app_id}-stopped"
    stopped = live.replace(app_id=app)
    source, settled = live.topic("edit-events"), live.topic("settled-examples")
    retries = live.topic("model-retry")
    asyncio.run(_commit_as_group(kafka_broker.bootstrap, settle_group(stopped), source, 2))
    asyncio.run(_commit_as_group(kafka_broker.bootstrap, stages_group(stopped), settled, 2))
    asyncio.run(_commit_as_group(kafka_broker.bootstrap, app, retries, 2))
    ns = parse(offsets.add_arguments, ["--app-id", app, "--to", "earliest", "--execute",
                                       *common])
    assert offsets.main_reset_offsets(ns) == 0
    text = capsys.readouterr().out
    assert f"group {settle_group(stopped)}" in text and f"group {app} " in text
    assert f"group {stages_group(stopped)}" in text
    assert set(asyncio.run(committed(kafka_broker.bootstrap, settle_group(stopped)))) == {
        TopicPartition(source, p) for p in range(live.partitions)}
    assert set(asyncio.run(committed(kafka_broker.bootstrap, stages_group(stopped)))) == {
        TopicPartition(live.topic(name), p) for name in STAGE_SOURCES
        for p in range(live.partitions)}
    assert {tp.topic for tp in asyncio.run(committed(kafka_broker.bootstrap, app))} == {
        retries}
    for group in (app, settle_group(stopped), stages_group(stopped)):
        assert set(asyncio.run(committed(kafka_broker.bootstrap, group)).values()) == {0}
