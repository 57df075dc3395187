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

from agents import metrics
from agents.runtime import Runtime, dumps
from streams.ingest import Accepted, Discarded, decode_event
from streams.settle import SettleMachine

CONTROL_KEY = b"__control__"


class PartitionStore(MutableMapping[str, Any]):
    """The slice of the settle table that belongs to one source partition."""

    def __init__(self, table: faust.Table, partition: int) -> None:
        self._table = table
        self._prefix = f"{partition}|"

    def __getitem__(self, key: str) -> Any:
        return self._table.data[self._prefix + key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._table[self._prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self._table[self._prefix + key]

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return (k[n:] for k in list(self._table.data.keys()) if k.startswith(self._prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class SettleState:
    """Machines per partition plus the wall-clock anchors used for idle ticks."""

    def __init__(self, rt: Runtime, table: faust.Table) -> None:
        self.rt = rt
        self.table = table
        self.machines: dict[int, SettleMachine] = {}
        # partition -> (wall time of the last real event, watermark then)
        self.anchors: dict[int, tuple[float, int]] = {}

    def machine(self, partition: int) -> SettleMachine:
        m = self.machines.get(partition)
        if m is None:
            s = self.rt.settings
            m = SettleMachine(quiescence_ms=s.quiescence_ms, ttl_ms=s.ttl_ms,
                              store=PartitionStore(self.table, partition))
            self.machines[partition] = m
        return m

    def forget(self) -> None:
        """After a rebalance: rebuild lazily from the (recovered) table."""
        self.machines.clear()
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
        await rt.dead_letter("edit-events-dlq", "ingest", verdict.reason, verdict.detail, msg)
        return
    event = verdict.event
    machine = state.machine(msg.partition)
    result = machine.apply(event)
    if event["type"] != "control":
        state.anchors[msg.partition] = (time.time(), machine.watermark_ms or event["ts_ms"])
    if result.error is not None:
        metrics.EVENTS_IN.labels(event["type"], "dlq").inc()
        await rt.dead_letter("edit-events-dlq", "settle", result.error, None, msg)
    else:
        metrics.EVENTS_IN.labels(event["type"], "accepted").inc()
    for orphan in result.expired:
        await rt.dead_letter("edit-events-dlq", "settle", "orphan_settled",
                             "no prediction arrived within ttl_ms", msg, original=dumps(orphan),
                             key=f"orphan:{orphan.get('request_id')}")
    for record in result.settled:
        record["pipeline_version"] = s.pipeline_version
        metrics.SETTLED.labels(record["settle_reason"]).inc()
        delay_ms = (machine.watermark_ms or record["settled_at_ms"]) - record["ts_ms"]
        metrics.SETTLE_DELAY.observe(max(0, delay_ms) / 1000)
        await rt.send("settled-examples", record["request_id"], record)
    metrics.OPEN_PREDICTIONS.set(state.open_total())
