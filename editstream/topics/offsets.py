"""Positions in a topic, said the way an operator says them, and `editstream reset-offsets`.

`WHEN` is what `replay --from/--to`, `export --since` and `reset-offsets --to` accept:

    2026-11-25T20:57:03Z, 2026-11-25 14:00+02:00, 2026-11-25   ISO-8601 (no zone: UTC)
    2h, 30m, 1d, 1h30m, 45s, 2w                                  that long ago
    offset:1234                                                  that offset in every partition
    earliest | latest | now                                      start / end of each partition

A time resolves per partition to the first offset whose record timestamp is at or after it
(`offsets_for_times`); a time after the last record resolves to the end of the partition.
Range ends are exclusive, so `--from 2h --to 1h` is every record stamped in that hour.

Parsing is pure (`parse_when`, tested without a broker); resolving needs a consumer.

`reset-offsets` mirrors `kafka-consumer-groups.sh --reset-offsets`: a dry run unless
`--execute`, and it refuses while the group has members, because a running worker would
overwrite the new offsets with its own at its next commit.

The pipeline has two consumer groups that read: the settle runner's, `<app_id>-settle`, which
reads `edit-events`; the stage runner's, `<app_id>-stages`, which reads `settled-examples`,
`student-samples`, `scored-examples`, `repair` and `model-retry`
(`schemas.topics.STAGE_SOURCES`). A third, Faust's `<app_id>`, reads nothing any more; the
offsets it committed in versions that ran the stages as Faust agents are where the stage
runner starts a partition it never committed, so a reset moves them too. Without `--group`,
`reset-offsets` resets the pipeline: each topic in its group (`pipeline_groups`), refusing if
any of the groups has members. `--group` names one group and resets only that one.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, for_code
from aiokafka.structs import OffsetAndMetadata

from agents.kafka import quiet_logger
from agents.kafka_security import Cluster, kafka_client_config
from schemas.topics import (
    STAGE_SOURCES,
    TOPICS,
    app_group,
    eval_group,
    settle_group,
    stages_group,
)
from streams import settings as settings_mod
from streams.settings import Settings

WhenKind = Literal["time", "offset", "earliest", "latest"]
T = TypeVar("T")

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
             "w": 7 * 86_400_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")


@dataclass(frozen=True)
class When:
    """A parsed WHEN: a point in time (epoch ms), an absolute offset, or a partition end."""

    kind: WhenKind
    value: int = 0  # epoch ms for "time", the offset for "offset"
    text: str = ""  # what the user typed, for messages and checkpoints

    def describe(self) -> str:
        if self.kind == "time":
            return datetime.fromtimestamp(self.value / 1000, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
        if self.kind == "offset":
            return f"offset {self.value}"
        return self.kind


def parse_duration_ms(text: str) -> int | None:
    """`1h30m` → 5 400 000; None when `text` is not a duration (whole string must match)."""
    text = text.strip().lower()
    pos, total = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * _UNITS_MS[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos > 0 else None


def parse_when(text: str, now_ms: int | None = None) -> When:
    """Parse a WHEN (see the module docstring); `now_ms` pins "now" for durations and tests.

    Raises ValueError with a message that lists the accepted forms."""
    raw = text.strip()
    low = raw.lower()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if low in ("earliest", "beginning", "start"):
        return When("earliest", text=raw)
    if low in ("latest", "end"):
        return When("latest", text=raw)
    if low == "now":
        return When("time", now, text=raw)
    if low.startswith("offset:"):
        num = low.removeprefix("offset:").strip()
        if not num.isdigit():
            raise ValueError(f"{text!r}: offset:N needs a non-negative integer N")
        return When("offset", int(num), text=raw)
    ago = parse_duration_ms(low)
    if ago is not None:
        return When("time", now - ago, text=raw)
    try:
        return When("time", iso_to_ms(raw), text=raw)
    except ValueError:
        pass
    raise ValueError(
        f"{text!r} is not a WHEN: use an ISO-8601 time (2026-11-25T14:00:00Z; no zone = UTC), "
        "a duration ago (30m, 2h, 1d, 1h30m), offset:N, earliest or latest")


def iso_to_ms(text: str) -> int:
    """ISO-8601 date or date-time to epoch ms; a missing zone means UTC (servers log UTC,
    and a replay must not mean different hours on different operators' laptops)."""
    t = text.strip()
    if len(t) == 10:  # a bare date: its midnight
        d = date.fromisoformat(t)
        return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
    dt = datetime.fromisoformat(t.replace(" ", "T", 1))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def parse_topic_arg(name: str, settings: Settings) -> str:
    """Pipeline topic names (`edit-events`, ...) get the run's prefix; others are literal."""
    return settings.topic(name) if name in TOPICS else name


# --------------------------------------------------------------------------- resolving


async def partitions_of(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of `topic` (refreshing metadata once: a fresh client knows none)."""
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise ValueError(f"topic {topic!r} does not exist")
    return [TopicPartition(topic, p) for p in sorted(parts)]


async def resolve(consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], when: When,
                  ) -> dict[TopicPartition, int]:
    """The offset `when` denotes in each partition, clamped to what the log still holds."""
    begin = await consumer.beginning_offsets(list(tps))
    end = await consumer.end_offsets(list(tps))
    if when.kind == "earliest":
        return dict(begin)
    if when.kind == "latest":
        return dict(end)
    if when.kind == "offset":
        return {tp: min(max(when.value, begin[tp]), end[tp]) for tp in tps}
    found = await consumer.offsets_for_times({tp: when.value for tp in tps})
    # no record at or after that time: the partition's end (nothing to include)
    return {tp: (found[tp].offset if found.get(tp) is not None else end[tp]) for tp in tps}


def new_consumer(bootstrap: Cluster, group_id: str | None = None, *,
                 isolation_level: str = "read_uncommitted") -> AIOKafkaConsumer:
    """A consumer that never commits on its own and never joins a group by itself."""
    return AIOKafkaConsumer(**kafka_client_config(bootstrap), group_id=group_id,
                            enable_auto_commit=False, auto_offset_reset="earliest",
                            isolation_level=isolation_level,
                            max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)


# --------------------------------------------------------------------------- reset-offsets


class GroupActiveError(RuntimeError):
    """The group has members; their next commit would undo a reset."""


@dataclass(frozen=True)
class GroupState:
    state: str  # Empty, Stable, PreparingRebalance, Dead, ...
    members: list[str]  # "client_id@host (member_id)"


async def retrying(call: Callable[[], Awaitable[T]], attempts: int = 20) -> T:
    """Retry Kafka's retriable errors for a while: a fresh cluster answers "coordinator not
    available" until it has created `__consumer_offsets`, and a coordinator moving or loading
    says so the same way."""
    for attempt in range(attempts):
        try:
            return await call()
        except KafkaError as exc:
            if not exc.retriable or attempt == attempts - 1:
                raise
            await asyncio.sleep(min(0.1 * 2 ** attempt, 1.0))
    raise AssertionError("unreachable")


async def describe_group(admin: AIOKafkaAdminClient, group: str) -> GroupState:
    """State and members of `group` (raw DescribeGroups answer, positional fields)."""

    async def once() -> GroupState:
        for resp in await admin.describe_consumer_groups([group]):
            for g in resp.groups:
                error_code, gid, state, members = g[0], g[1], g[2], g[5]
                if gid != group:
                    continue
                if error_code:  # e.g. 14, coordinator still loading: retriable
                    raise for_code(error_code)(f"describe group {group!r}")
                return GroupState(state, [f"{m[1]}@{m[2]} ({m[0]})" for m in members])
        return GroupState("Dead", [])

    return await retrying(once)


@dataclass
class ResetPlan:
    group: str
    rows: list[tuple[TopicPartition, int | None, int]]  # tp, current (None: no commit), new

    def table(self) -> str:
        lines = [f"{'TOPIC':<40} {'PARTITION':>9} {'CURRENT':>10} {'NEW':>10} {'CHANGE':>8}"]
        for tp, cur, new in self.rows:
            change = "" if cur is None else f"{new - cur:+d}"
            lines.append(f"{tp.topic:<40} {tp.partition:>9} "
                         f"{'-' if cur is None else cur:>10} {new:>10} {change:>8}")
        return "\n".join(lines)


async def plan_reset(bootstrap: Cluster, group: str, when: When, topics: Iterable[str] = (),
                     ) -> ResetPlan:
    """Current → new offsets of `group` for `topics` (default: every topic it committed)."""
    admin = AIOKafkaAdminClient(**kafka_client_config(bootstrap))
    consumer = new_consumer(bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await retrying(lambda: admin.list_consumer_group_offsets(group))
        wanted = list(topics)
        if not wanted:
            wanted = sorted({tp.topic for tp in committed})
            if not wanted:
                raise ValueError(f"group {group!r} has no committed offsets; name the topic "
                                 "with --topic")
        tps = [tp for topic in wanted for tp in await partitions_of(consumer, topic)]
        target = await resolve(consumer, tps, when)
        rows = []
        for tp in tps:
            meta = committed.get(tp)
            cur = meta.offset if meta is not None and meta.offset >= 0 else None
            rows.append((tp, cur, target[tp]))
        return ResetPlan(group, rows)
    finally:
        await consumer.stop()
        await admin.close()


async def ensure_inactive(bootstrap: Cluster, group: str) -> GroupState:
    admin = AIOKafkaAdminClient(**kafka_client_config(bootstrap))
    await admin.start()
    try:
        state = await describe_group(admin, group)
    finally:
        await admin.close()
    if state.members:
        raise GroupActiveError(
            f"group {group!r} is active ({state.state}, {len(state.members)} member(s): "
            f"{', '.join(state.members[:3])}); stop its workers first — they would overwrite "
            "the reset at their next commit")
    return state


async def execute_reset(bootstrap: Cluster, plan: ResetPlan) -> None:
    """Commit the plan's offsets for the group without joining it: a manually assigned
    consumer commits as a "simple" (generation -1) member, which the coordinator accepts
    only while the group is empty — so a worker that joined meanwhile makes this fail
    rather than be silently overridden."""
    await ensure_inactive(bootstrap, plan.group)
    consumer = new_consumer(bootstrap, group_id=plan.group)
    await consumer.start()
    try:
        tps = [tp for tp, _, _ in plan.rows]
        consumer.assign(tps)
        await consumer.commit({tp: OffsetAndMetadata(new, "") for tp, _, new in plan.rows})
    finally:
        await consumer.stop()


def pipeline_groups(settings: Settings, topics: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(group, topics) pairs that a reset of the pipeline covers: `edit-events` belongs to
    the settle runner's group, the stage runner's sources (`model-retry` among them) to its
    group, `settled-examples` also to the eval stage's group, any other topic to Faust's
    (offsets of older versions). No topics named: all of the runners' topics, and every
    topic Faust's group committed."""
    settle = [settings.topic("edit-events")]
    stages = [settings.topic(name) for name in STAGE_SOURCES]
    evaluated = [settings.topic("settled-examples")]
    if not topics:
        return [(app_group(settings), []), (settle_group(settings), settle),
                (stages_group(settings), stages), (eval_group(settings), evaluated)]
    pairs = [(app_group(settings), [t for t in topics if t not in settle + stages]),
             (settle_group(settings), [t for t in topics if t in settle]),
             (stages_group(settings), [t for t in topics if t in stages]),
             (eval_group(settings), [t for t in topics if t in evaluated])]
    return [(group, wanted) for group, wanted in pairs if wanted]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `editstream reset-offsets`."""
    parser.add_argument("--group", default=None,
                        help="one consumer group (default: the pipeline's four, "
                             "<app-id>-settle for edit-events, <app-id>-stages for the "
                             "stage topics and model-retry, <app-id>-eval for "
                             "settled-examples, and <app-id>, Faust's, whose offsets older "
                             "versions committed)")
    parser.add_argument("--to", required=True, metavar="WHEN",
                        help="ISO-8601 time, a duration ago (2h, 30m, 1d), offset:N, "
                             "earliest or latest")
    parser.add_argument("--topic", action="append", default=[], metavar="T",
                        help="topic to reset (repeatable; pipeline names get the "
                             "--topic-prefix); default: every topic the group committed")
    parser.add_argument("--execute", action="store_true",
                        help="commit the new offsets (default: a dry run that only prints)")
    settings_mod.add_arguments(parser, only=("broker", "app_id", "topic_prefix",
                                            *settings_mod.KAFKA_FIELDS))


def main_reset_offsets(ns: argparse.Namespace) -> int:
    settings = settings_mod.from_args(ns)
    if not settings.broker:
        print("editstream reset-offsets: set --broker or EDITSTREAM_BROKER", file=sys.stderr)
        return 2
    when = parse_when(ns.to)
    topics = [parse_topic_arg(t, settings) for t in ns.topic]
    plans = [(ns.group, topics)] if ns.group else pipeline_groups(settings, topics)
    try:
        # aiokafka logs a connection's failure with a traceback before raising it; the
        # message below says what it means
        with quiet_logger(logging.getLogger("aiokafka.conn")):
            return asyncio.run(_reset(settings, plans, when, ns.execute,
                                      pipeline=not ns.group))
    except KafkaError as exc:
        # The embedded Tansu broker closes the connection on the group-offset requests
        # (aiokafka cannot read its answer): say so instead of a traceback.
        print(f"editstream reset-offsets: the broker at {settings.broker} did not answer the "
              f"consumer-group requests ({type(exc).__name__}). Resetting offsets needs Apache "
              "Kafka (`make kafka` or `editstream broker --kind kafka`); the embedded Tansu "
              "broker of `make demo` does not support it.", file=sys.stderr)
        return 1


async def _reset(bootstrap: Cluster, groups: list[tuple[str, list[str]]], when: When,
                 execute: bool, *, pipeline: bool = False) -> int:
    states: dict[str, GroupState] = {}
    try:  # every group first: a reset of the pipeline is all or nothing
        for group, _ in groups:
            states[group] = await ensure_inactive(bootstrap, group)
    except GroupActiveError as exc:
        print(f"editstream reset-offsets: refused: {exc}", file=sys.stderr)
        return 1
    plans = []
    for group, topics in groups:
        try:
            plans.append(await plan_reset(bootstrap, group, when, topics))
        except ValueError:
            if pipeline and not topics:  # Faust's group before its first commit
                print(f"group {group} ({states[group].state}): no committed offsets, "
                      "nothing to reset")
                continue
            raise
    for plan in plans:
        print(f"group {plan.group} ({states[plan.group].state}) → {when.describe()}")
        print(plan.table())
    if not execute:
        print("dry run: nothing changed (add --execute to commit these offsets)")
        return 0
    for plan in plans:
        try:
            await execute_reset(bootstrap, plan)
        except GroupActiveError as exc:
            print(f"editstream reset-offsets: refused: {exc}", file=sys.stderr)
            return 1
        print(f"committed {len(plan.rows)} offsets for group {plan.group}")
    return 0
