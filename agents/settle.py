"""Settle agent: ingest + settle, one partition of `edit-events` at a time.

Each partition has its own `SettleMachine` whose durable state is a namespaced view of the
changelog-backed table, so a restarted or rebalanced worker rebuilds it from the changelog.

Event time on idle partitions: Faust tables can only change inside stream iteration, so
wall-clock progress enters the stream as data. A timer notices a partition that has open
entries but no events for `idle_tick_ms`, and writes a `control` tick into that partition of
`edit-events` carrying the new watermark (last event time + wall time since). The tick is
processed in offset order like any event, and it stays in the log, so a replay of the topic
makes exactly the same decisions as the live run did.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import faust

from agents import faust_fixes, metrics
from agents.runtime import Runtime, dumps
from streams.ingest import Accepted, Discarded, decode_event
from streams.settle import SettleMachine

CONTROL_KEY = b"__control__"


_DELETED = object()


class PartitionStore(MutableMapping[str, Any]):
    """The slice of the settle table that belongs to one source partition.

    Writes made while one event is handled are staged and land in the table together, after
    the event's outputs were acknowledged, along with the event's offset. Faust commits on a
    timer, which can fall in the middle of an event (at any await), committing its table
    writes but not its offset; the event is then handled again after a crash. Landing state
    last, and skipping events at or below the landed offset, makes that replay harmless:
    outputs may repeat (same keys, same bytes) but no edit is ever applied twice and no output
    is lost.
    """

    def __init__(self, table: faust.Table, partition: int) -> None:
        self._table = table
        self._prefix = f"{partition}|"
        self._applied_key = f"{partition}#applied"  # outside the prefix: the machine never sees it
        self._staged: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._staged:
            value = self._staged[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self._table.data[self._prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._staged[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._staged[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        landed = [k[n:] for k in list(self._table.data.keys()) if k.startswith(self._prefix)]
        staged = self._staged
        yield from (k for k in landed if staged.get(k) is not _DELETED)
        yield from (k for k, v in list(staged.items())
                    if v is not _DELETED and self._prefix + k not in self._table.data)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def applied_offset(self) -> int | None:
        """Offset of the last event whose state landed (None before the first)."""
        value = self._table.data.get(self._applied_key)
        return value if isinstance(value, int) else None

    def land(self, offset: int) -> list[tuple[str, Any]]:
        """Write the staged changes and `offset` into the table's data, with no await in
        between, and return them as changelog writes (value None: delete) for `publish`."""
        data = self._table.data
        writes: list[tuple[str, Any]] = []
        for key, value in self._staged.items():
            full = self._prefix + key
            if value is not _DELETED:
                data[full] = value
                writes.append((full, value))
            elif full in data:
                del data[full]
                writes.append((full, None))
        self._staged.clear()
        data[self._applied_key] = offset
        writes.append((self._applied_key, offset))
        return writes


def drop_partitions(table: faust.Table, partitions: set[int]) -> int:
    """Remove the given source partitions' keys from the table's memory (no changelog)."""
    data = table.data
    prefixes = tuple(f"{p}|" for p in partitions) + tuple(f"{p}#" for p in partitions)
    doomed = [k for k in list(data.keys()) if k.startswith(prefixes)]
    for key in doomed:
        del data[key]
    return len(doomed)


async def publish(table: faust.Table, partition: int, writes: list[tuple[str, Any]]) -> None:
    """Send one event's changelog writes together, awaited, while no commit can start.

    Faust's own table writes go through a buffer that a background task drains, and an
    exactly-once commit can fall between two of them; after a crash the table would hold half
    an event. Sent here under the commit gate, one event's writes share a transaction."""
    topic = table.changelog_topic
    async with faust_fixes.COMMIT_GATE:
        for key, value in writes:
            if value is None:
                await topic.send(key=key, value=None, partition=partition,
                                 key_serializer="json", value_serializer="raw")
            else:
                await topic.send(key=key, value=value, partition=partition,
                                 key_serializer="json", value_serializer="json")


class SettleState:
    """Machines per partition plus the wall-clock anchors used for idle ticks."""

    def __init__(self, rt: Runtime, table: faust.Table) -> None:
        self.rt = rt
        self.table = table
        self.machines: dict[int, SettleMachine] = {}
        self.stores: dict[int, PartitionStore] = {}
        # partition -> (wall time of the last real event, watermark then)
        self.anchors: dict[int, tuple[float, int]] = {}

    def machine(self, partition: int) -> SettleMachine:
        m = self.machines.get(partition)
        if m is None:
            s = self.rt.settings
            store = PartitionStore(self.table, partition)
            m = SettleMachine(quiescence_ms=s.quiescence_ms, ttl_ms=s.ttl_ms, store=store)
            self.machines[partition] = m
            self.stores[partition] = store
        return m

    def forget(self) -> None:
        """After a rebalance: rebuild lazily from the (recovered) table."""
        self.machines.clear()
        self.stores.clear()
        self.anchors.clear()

    def open_total(self) -> int:
        return sum(m.open_count for m in self.machines.values())


def register(app: faust.App, rt: Runtime) -> SettleState:
    s = rt.settings
    table = app.Table("settle-state", partitions=s.partitions,
                      schema=faust.Schema(key_type=str, key_serializer="json",
                                          value_serializer="json"))
    state = SettleState(rt, table)
    source = rt.topic("edit-events")

    @app.agent(source, name="settle")
    async def settle(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            started = time.perf_counter()
            try:
                await _handle(rt, state, msg)
            except Exception as exc:  # never let one record stop the partition
                await rt.dead_letter("edit-events-dlq", "settle", "internal_error",
                                     type(exc).__name__, msg)
            metrics.STAGE_SECONDS.labels("settle").observe(time.perf_counter() - started)

    @app.timer(interval=max(0.05, s.idle_tick_ms / 1000 / 2))
    async def idle_ticks() -> None:
        now = time.time()
        for partition, machine in list(state.machines.items()):
            anchor = state.anchors.get(partition)
            if anchor is None or machine.due_ms() is None:
                continue
            idle_for = (now - anchor[0]) * 1000
            if idle_for < s.idle_tick_ms:
                continue
            tick = {"v": 1, "type": "control", "op": "tick", "session_id": "__control__",
                    "ts_ms": anchor[1] + int(idle_for), "can_collect_data": False,
                    "watermark_ms": anchor[1] + int(idle_for)}
            await source.send(key=CONTROL_KEY, value=dumps(tick), partition=partition)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: Any, **kwargs: Any) -> None:
        state.forget()
        # Drop what this worker holds of the revoked partitions' state. Recovery (the memory
        # store always restores from the start of the changelog) then rebuilds exactly what
        # was committed: writes of a transaction that a revoke left open, and that the next
        # owner aborts, must not survive in memory under keys the changelog never confirms.
        names = {tp.topic for tp in revoked}
        parts = {tp.partition for tp in revoked if tp.topic == source.get_topic_name()}
        if parts and source.get_topic_name() in names:
            drop_partitions(table, parts)

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: Any, **kwargs: Any) -> None:
        state.forget()

    return state


async def _handle(rt: Runtime, state: SettleState, msg: Any) -> None:
    s = rt.settings
    verdict = decode_event(msg.value, s)
    if isinstance(verdict, Discarded):
        metrics.EVENTS_IN.labels("unknown", "discarded").inc()
        metrics.DISCARDED.labels(verdict.reason).inc()
        return
    if not isinstance(verdict, Accepted):
        metrics.EVENTS_IN.labels("unknown", "dlq").inc()
        await rt.dead_letter("edit-events-dlq", "ingest", verdict.reason, verdict.detail, msg,
                             wait=True)
        return
    event = verdict.event
    machine = state.machine(msg.partition)
    store = state.stores[msg.partition]
    applied = store.applied_offset
    if applied is not None and msg.offset <= applied:
        metrics.SETTLE_REPLAYED.inc()  # handled before a crash; its outputs are out already
        return
    try:
        await _apply(rt, state, machine, event, msg)
    finally:
        await publish(state.table, msg.partition, store.land(msg.offset))
    metrics.OPEN_PREDICTIONS.set(state.open_total())


async def _apply(rt: Runtime, state: SettleState, machine: SettleMachine,
                 event: dict[str, Any], msg: Any) -> None:
    """Apply one event (writes are staged) and send what it produced, waiting for acks."""
    s = rt.settings
    result = machine.apply(event)
    if event["type"] != "control":
        state.anchors[msg.partition] = (time.time(), machine.watermark_ms or event["ts_ms"])
    if result.error is not None:
        metrics.EVENTS_IN.labels(event["type"], "dlq").inc()
        await rt.dead_letter("edit-events-dlq", "settle", result.error, None, msg, wait=True)
    else:
        metrics.EVENTS_IN.labels(event["type"], "accepted").inc()
    for orphan in result.expired:
        await rt.dead_letter("edit-events-dlq", "settle", "orphan_settled",
                             "no prediction arrived within ttl_ms", msg, original=dumps(orphan),
                             key=f"orphan:{orphan.get('request_id')}", wait=True)
    for record in result.settled:
        record["pipeline_version"] = s.pipeline_version
        metrics.SETTLED.labels(record["settle_reason"]).inc()
        delay_ms = (machine.watermark_ms or record["settled_at_ms"]) - record["ts_ms"]
        metrics.SETTLE_DELAY.observe(max(0, delay_ms) / 1000)
        await rt.send("settled-examples", record["request_id"], record, wait=True)
