"""Settle stage: ingest + settle of `edit-events`, on plain aiokafka inside the Faust worker.

Why not a Faust agent: Faust's per-message path (conductor, stream, acks) and its table
changelog cost ~900 µs of CPU per event; this runner fetches batches with aiokafka, applies a
whole batch of one partition to its `SettleMachine` (`streams.settle.apply_batch`, in chunks
with a yield to the event loop between them) and writes the batch's outputs and its state
changes coalesced per key, in one go.

Wiring: `register` builds one `SettleRunner` (a `mode.Service`) and hands it to the app with
`app.service`, so Faust starts it once the app is up and stops it with the app, in the same
`editstream worker` process as the other stages (the stage runner, agents/stages.py, and
the `model-retry` Faust agent). The runner has
its own consumer group, `<app_id>-settle` (`schemas.topics.settle_group`): Faust's group uses
its own assignor protocol, so the two cannot share one. Its committed offsets on `edit-events`
are what `editstream reset-offsets` moves for settle; `agents/lag.py` reports its lag.

State: per source partition, the machine's store is a `StagedStore` over a dict; it is durable
in the compacted topic `<app_id>-settle-state-changelog` (the name and the JSON encoding of the
Faust table it replaces: key `"<partition>|<key>"`, `"<partition>#applied"` for the offset of
the last record whose state is in; `streams.settle.changelog_records` / `Restored`). Output
partition = source partition, for every topic (see `Runtime.send`).

Per fetched batch of a partition, under one lock that the rebalance callbacks also take (a
revoke never lands in the middle of a batch):

The live scorecard: each settled example with a served output also gets its `scorecard`
record (`streams.evaluate.scorecard_record`: the served region scored against the settled
one, with the outcome), keyed by request id, in the same write as the example (one
transaction under exactly_once); its metrics by served model version are counted once the
batch is written.

* exactly_once (Apache Kafka): each assigned partition has a transactional producer,
  `transactional_id=<app_id>-settle-<partition>`. Starting it on assignment fences a crashed
  or stale predecessor and aborts its open transaction, and only then is the state restored
  (read_committed, to the last stable offset). A batch is one transaction: settled examples,
  dead letters, the coalesced changelog writes plus the applied offset, and the consumer
  offset (`send_offsets_to_transaction`); the staged writes land in memory only after the
  commit. On any failure the transaction is given up and the partition is restored again from
  its changelog (a commit whose outcome is unknown may have gone through: the restored
  applied offset then skips the batch) and the consumer is moved back to the batch's first
  offset. A fenced producer means the partition now belongs to another worker: its state is
  dropped here.
* at_least_once (Tansu, no transactions): one idempotent producer; outputs are sent and
  acknowledged, then the changelog writes with the applied offset, then the staged writes land
  and the consumer offset is committed. Records at or below the applied offset (handled before
  a crash whose offset commit was lost) are skipped and counted in
  `editstream_settle_replayed_events_total`. On a send failure the staged writes are dropped
  and the batch is fetched again.

Rebalances: revoked partitions are dropped (machine, state, producer) after the batch in
flight; assigned ones are restored from their changelog partition before any of their records
is processed.

Event time on idle partitions: a timer notices a partition that has open entries but no
events for `idle_tick_ms`, and writes a `control` tick into that partition of `edit-events`
carrying the new watermark (last event time + wall time since). The tick is processed in
offset order like any event, and it stays in the log, so a replay of the topic makes exactly
the same decisions as the live run did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import mode
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, InvalidProducerEpoch, ProducerFenced

from agents import metrics
from agents.kafka import Rebalance, send_all, start_producer
from agents.kafka_security import describe_failure, exit_refused, kafka_client_config
from agents.lag import runner_lag
from agents.runtime import Runtime, dead_letter_record, dumps, observe_lag
from schemas.records import EvalRecord, SettledExample
from schemas.topics import settle_changelog, settle_group
from streams.emit import rejected_record
from streams.evaluate import OUTCOMES, scorecard_record
from streams.ingest import Discarded, Rejected, Verdict, decode_event, screen_settled
from streams.route import settle_rejection
from streams.settle import (
    BatchOutcome,
    Forget,
    Restored,
    SettleMachine,
    StagedStore,
    apply_batch,
    batch_item,
    changelog_records,
)

CONTROL_KEY = b"__control__"
MAX_RECORDS = 5000  # per fetch, over all partitions
# records decoded and applied between two yields to the event loop (~60 µs each: ~12 ms)
CHUNK_RECORDS = 200
# a valid event and one the schema refuses: decoding them compiles both validators
WARM_UP = (b'{"v":1,"type":"edit","session_id":"warm-up","ts_ms":0,"can_collect_data":true,'
           b'"path":"a.py","start":0,"end":0,"text":"","predicted":false}',
           b'{"v":1,"type":"edit","session_id":"warm-up","ts_ms":0,"can_collect_data":true}')
log = logging.getLogger(__name__)


@dataclass
class PartitionState:
    """What the runner holds for one assigned partition of `edit-events`."""

    tp: TopicPartition
    store: StagedStore
    machine: SettleMachine
    applied: int | None  # offset of the last record whose state landed
    producer: AIOKafkaProducer | None  # exactly_once: the partition's transactional producer
    anchor: tuple[float, int] | None = None  # (wall time of the last real event, watermark)
    next_offset: int | None = None  # the offset the next batch must start at (None: any)


@dataclass
class _Tally:
    """A batch's metric updates, applied once the batch is written: counter increments by
    (counter, label values), and settle delays for the histogram."""

    counts: Counter[tuple[Any, tuple[str, ...]]] = field(default_factory=Counter)
    delays_s: list[float] = field(default_factory=list)
    left_at_ms: list[int] = field(default_factory=list)  # settled_at_ms of rejected examples
    scorecards: list[EvalRecord] = field(default_factory=list)  # the batch's scorecard records


class SettleRunner(mode.Service):
    """The settle stage (see the module docstring)."""

    def __init__(self, rt: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        s = rt.settings
        self.rt = rt
        self.settings = s
        self.exactly_once = s.processing_guarantee == "exactly_once"
        self.group_id = settle_group(s)
        self.source = s.topic("edit-events")
        self.changelog = settle_changelog(s)
        self.settled_topic = s.topic("settled-examples")
        self.dlq_topic = s.topic("edit-events-dlq")
        self.rejected_topic = s.topic("rejected-examples")
        self.scorecard_topic = s.topic("scorecard")
        self.versions = metrics.VersionLabels(s.scorecard_versions)
        self.versions_seen: set[str] = set()
        self.parts: dict[int, PartitionState] = {}
        self.committed: dict[TopicPartition, int] = {}  # the group's offsets, as we know them
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.restorer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None  # outputs (at_least_once) and ticks
        self.restored = asyncio.Event()  # set once an assignment has been restored
        self.restore_s = 0.0  # how long the last assignment's restore took
        # first-use costs (~40 ms: the schema validators compiled) now, at construction
        # before the worker's loop runs, not on the loop in the middle of the first batch
        for raw in WARM_UP:
            decode_event(raw, s)

    # ---- lifecycle --------------------------------------------------------------------------

    async def on_start(self) -> None:
        s = self.settings
        iso = "read_committed" if self.exactly_once else "read_uncommitted"
        # no linger: a batch's sends are all queued before its acks are awaited
        self.producer = await start_producer(s, linger_ms=0)
        self.restorer = AIOKafkaConsumer(
            **kafka_client_config(s), enable_auto_commit=False, isolation_level=iso,
            auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20)
        await self.restorer.start()
        self.consumer = AIOKafkaConsumer(
            **kafka_client_config(s), group_id=self.group_id,
            client_id=f"{s.app_id}-settle", enable_auto_commit=False,
            auto_offset_reset="earliest", isolation_level=iso,
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, s.session_timeout_s / 3) * 1000),
            rebalance_timeout_ms=60_000, request_timeout_ms=90_000,
            max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
        await self.consumer.start()
        # Subscribed after start: start() would otherwise wait for the group's first
        # assignment, and the app starts its services one after the other, so each group's
        # join (15 s on Tansu) would wait for the previous one. The join happens in the
        # consume loop's first fetch instead, alongside the other groups'.
        self.consumer.subscribe([self.source], listener=Rebalance(self, "settle"))

    async def on_stop(self) -> None:
        if self.consumer is not None:
            # not under the lock: leaving the group waits for a rebalance callback in progress
            await self.consumer.stop()
        async with self.lock:  # let the batch in flight finish
            for part in list(self.parts.values()):
                await self._drop(part)
            for client in (self.restorer, self.producer):
                if client is not None:
                    await client.stop()

    # ---- rebalances -------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            for tp in revoked:
                part = self.parts.get(tp.partition)
                if tp.topic == self.source and part is not None:
                    await self._drop(part)
                self.committed.pop(tp, None)
            metrics.OPEN_PREDICTIONS.set(self.open_total())

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            started = time.perf_counter()
            for tp in sorted(assigned):
                if tp.topic == self.source and tp.partition not in self.parts:
                    await self._restore(tp)
            self.restore_s = time.perf_counter() - started
            metrics.OPEN_PREDICTIONS.set(self.open_total())
        self.restored.set()

    async def _drop(self, part: PartitionState) -> None:
        self.parts.pop(part.tp.partition, None)
        if part.producer is not None:
            try:
                await part.producer.stop()
            except Exception as exc:  # a fenced or broken producer: nothing to keep anyway
                log.debug("settle producer for %s stopped with %r", part.tp, exc)

    async def _restore(self, tp: TopicPartition) -> PartitionState:
        """Build the partition's machine from its changelog partition, retrying until done
        (a partition must never be processed without its state)."""
        delay = 0.5
        while True:
            try:
                return await self._restore_once(tp)
            except Exception as exc:
                if self.should_stop:
                    raise
                if (refused := describe_failure(exc, self.settings)) is not None:
                    exit_refused("settle", refused)  # an ACL taken away: retrying cannot help
                log.warning("settle: restoring %s failed (%r); retrying", tp, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _restore_once(self, tp: TopicPartition) -> PartitionState:
        s = self.settings
        old = self.parts.get(tp.partition)
        if old is not None:
            await self._drop(old)
        producer = None
        try:
            if self.exactly_once:
                # InitProducerId: fences any other producer of this partition and aborts its
                # open transaction, so the state read below is all that was committed
                producer = AIOKafkaProducer(
                    **kafka_client_config(s), transactional_id=f"{s.app_id}-settle-"
                    f"{tp.partition}", enable_idempotence=True, acks="all", linger_ms=0,
                    max_request_size=4 * 1024 * 1024, request_timeout_ms=90_000)
                await producer.start()
            restored = await self._read_changelog(tp.partition)
            committed = await self.consumer.committed(tp) if self.consumer else None
        except BaseException:
            if producer is not None:
                await producer.stop()
            raise
        store = StagedStore(restored.base)
        machine = self._machine(store)
        part = PartitionState(tp, store, machine, restored.applied, producer)
        self.parts[tp.partition] = part
        if committed is not None:
            self.committed[tp] = committed
        log.info("settle: %s restored (%d changelog records, %d open, applied %s)", tp,
                 restored.records, machine.open_count, restored.applied)
        return part

    def _machine(self, store: StagedStore) -> SettleMachine:
        s = self.settings
        return SettleMachine(quiescence_ms=s.quiescence_ms, ttl_ms=s.ttl_ms, store=store,
                             privacy_memory=s.privacy_memory)

    async def _read_changelog(self, partition: int) -> Restored:
        """The changelog partition from its start to its end (read_committed under
        exactly_once: the last stable offset). Tansu reports a partition's end as the last
        batch's base offset + 1; whole batches are fetched, so stopping once the position
        reaches the end reads them all (as `editstream.topics.kafka_io.read_to_end` does)."""
        consumer = self.restorer
        assert consumer is not None
        ctp = TopicPartition(self.changelog, partition)
        restored = Restored()
        consumer.assign([ctp])
        await consumer.seek_to_beginning(ctp)
        end = (await consumer.end_offsets([ctp]))[ctp]
        while end > 0 and await consumer.position(ctp) < end:
            batch = await consumer.getmany(ctp, timeout_ms=1000, max_records=20_000)
            for rec in batch.get(ctp, ()):
                restored.add(partition, rec.key, rec.value)
        consumer.assign([])
        return restored

    # ---- batches ----------------------------------------------------------------------------

    @mode.Service.task
    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.should_stop:
            try:
                batch = await consumer.getmany(timeout_ms=500, max_records=MAX_RECORDS)
            except ConsumerStoppedError:
                return
            if not batch:
                continue
            async with self.lock:
                done = await asyncio.gather(*(self.process(tp, records)
                                              for tp, records in batch.items()))
                if not self.exactly_once:
                    await self._commit({tp: off for tp, off in done if off is not None})

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assigned = self.consumer.assignment() if self.consumer else set()
        offsets = {tp: off for tp, off in offsets.items() if tp in assigned}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)  # type: ignore[union-attr]
        except Exception as exc:  # a rebalance in between: the applied offsets cover it
            log.warning("settle: offset commit failed (%r)", exc)
            return
        self.committed.update(offsets)

    async def process(self, tp: TopicPartition, records: list[Any]
                      ) -> tuple[TopicPartition, int | None]:
        """Apply and write one fetched batch of one partition. Returns the offset to commit
        (at_least_once; None: nothing to commit)."""
        part = self.parts.get(tp.partition)
        if part is None or tp.topic != self.source:
            return tp, None  # revoked while the fetch was on its way
        if part.next_offset is not None:
            records = [r for r in records if r.offset >= part.next_offset]
        if not records:
            return tp, None
        started = time.perf_counter()
        applied = part.applied
        outcome, sends, tally = await self._apply_chunked(part, records)
        await asyncio.sleep(0)  # the last chunk's step ends here, not with the changelog's
        state = changelog_records(tp.partition, outcome.writes,
                                  outcome.applied if outcome.applied != applied else None)
        first, last = records[0].offset, records[-1].offset
        try:
            if self.exactly_once:
                await self._transaction(part, sends, state, last)
            else:
                await self._send_all(self.producer, sends, tp.partition)
                await self._send_all(self.producer, [(self.changelog, k, v)
                                                     for k, v in state], tp.partition)
        except (ProducerFenced, InvalidProducerEpoch) as exc:
            log.warning("settle: producer of %s fenced (%r): another worker owns it", tp, exc)
            await self._drop(part)
            return tp, None
        except Exception as exc:
            log.warning("settle: batch %s@%d..%d failed (%r); doing it again", tp, first, last,
                        exc)
            if self.exactly_once:
                part = await self._restore(tp)
            else:
                part.store.discard()
                part.machine = self._machine(part.store)
            part.next_offset = first
            if self.consumer is not None and tp in self.consumer.assignment():
                self.consumer.seek(tp, first)
            return tp, None
        part.store.land()
        part.applied = outcome.applied
        part.next_offset = last + 1
        if outcome.anchor_ms is not None:
            part.anchor = (time.time(), outcome.anchor_ms)
        if self.exactly_once:
            self.committed[tp] = last + 1
        await asyncio.sleep(0)  # counting a batch's events is a step of its own
        self._count(tally, outcome, len(records), time.perf_counter() - started)
        return tp, last + 1

    async def _apply_chunked(self, part: PartitionState, records: list[Any]
                             ) -> tuple[BatchOutcome, list[tuple[str, bytes, bytes]], _Tally]:
        """Decode, apply and turn into output records a fetched batch, `CHUNK_RECORDS` at a
        time with a yield to the event loop in between: a full fetch (up to `MAX_RECORDS`,
        ~60 µs each) would otherwise hold the loop for a quarter of a second, and with it
        the stage runner, the model clients and the heartbeats. The staged store is not
        landed between chunks, so the merged outcome is the one `apply_batch` would give
        for the whole batch: its writes are the store's writes so far, coalesced per key."""
        s = self.settings
        applied = part.applied
        merged = BatchOutcome(applied=applied)
        sends: list[tuple[str, bytes, bytes]] = []
        tally = _Tally()
        for start in range(0, len(records), CHUNK_RECORDS):
            if start:
                await asyncio.sleep(0)
            chunk = records[start:start + CHUNK_RECORDS]
            verdicts: dict[int, Verdict] = {}
            items: list[tuple[int, dict[str, Any] | Forget | None]] = []
            for rec in chunk:
                event: dict[str, Any] | Forget | None = None
                if applied is None or rec.offset > applied:
                    verdict = decode_event(rec.value, s)
                    verdicts[rec.offset] = verdict
                    event = batch_item(verdict)
                items.append((rec.offset, event))
            out = apply_batch(part.machine, part.store, items, applied)
            chunk_sends, chunk_tally = self._outputs(part, chunk, verdicts, out)
            sends.extend(chunk_sends)
            tally.counts.update(chunk_tally.counts)
            tally.delays_s.extend(chunk_tally.delays_s)
            tally.left_at_ms.extend(chunk_tally.left_at_ms)
            tally.scorecards.extend(chunk_tally.scorecards)
            merged.events.extend(out.events)
            merged.dropped.update(out.dropped)
            merged.skipped += out.skipped
            merged.applied = out.applied  # offsets only grow: the last chunk's is the batch's
            if out.anchor_ms is not None:
                merged.anchor_ms = out.anchor_ms
            merged.writes = out.writes  # every write staged since the last land
        return merged, sends, tally

    def _outputs(self, part: PartitionState, records: list[Any], verdicts: dict[int, Verdict],
                 outcome: BatchOutcome) -> tuple[list[tuple[str, bytes, bytes]], _Tally]:
        """The batch's records for settled-examples, rejected-examples and the DLQ, in offset
        order, and the
        metric counts they stand for (added once the batch is written)."""
        s = self.settings
        src, p = self.source, part.tp.partition
        sends: list[tuple[str, bytes, bytes]] = []
        tally = _Tally()
        counts = tally.counts
        by_offset = {ev.offset: ev for ev in outcome.events}
        raw_of = {rec.offset: rec.value for rec in records}

        def dead(stage: str, reason: str, detail: str | None, offset: int,
                 original: bytes | None = None, key: str | None = None) -> None:
            raw = (raw_of[offset] or b"") if original is None else original
            k, v = dead_letter_record(stage, reason, detail, src, p, offset, raw, s, key)
            sends.append((self.dlq_topic, k, v))
            counts[metrics.DLQ, (stage, metrics.reason_label(reason))] += 1

        def withdrawn(rid: str, reason: str) -> None:
            # a prediction that passed ingest but leaves for privacy: accounted for by a
            # rejection that carries no content
            counts[metrics.REJECTED, ("settle", reason)] += 1
            sends.append((self.rejected_topic, rid.encode(),
                          dumps(rejected_record(rid, "settle", reason, s))))

        for offset, verdict in verdicts.items():
            if isinstance(verdict, Discarded):
                counts[metrics.EVENTS_IN, ("unknown", "discarded")] += 1
                counts[metrics.DISCARDED, (verdict.reason,)] += 1
                for rid in outcome.dropped.get(offset, ()):
                    withdrawn(rid, "edit_discarded")
                continue
            if isinstance(verdict, Rejected):
                counts[metrics.EVENTS_IN, ("unknown", "dlq")] += 1
                dead("ingest", verdict.reason, verdict.detail, offset)
                continue
            ev = by_offset[offset]
            etype = ev.event["type"]
            if ev.applied is None:
                counts[metrics.EVENTS_IN, (etype, "dlq")] += 1
                dead("settle", "internal_error", ev.crash, offset)
                continue
            if ev.applied.error is not None:
                counts[metrics.EVENTS_IN, (etype, "dlq")] += 1
                dead("settle", ev.applied.error, None, offset)
            elif ev.applied.discarded is not None:
                counts[metrics.EVENTS_IN, (etype, "discarded")] += 1
                counts[metrics.DISCARDED, (ev.applied.discarded,)] += 1
            else:
                counts[metrics.EVENTS_IN, (etype, "accepted")] += 1
            for orphan in ev.applied.expired:
                dead("settle", "orphan_settled", "no prediction arrived within ttl_ms", offset,
                     original=dumps(orphan), key=f"orphan:{orphan.get('request_id')}")
            for settled in ev.applied.settled:
                screened = screen_settled(settled, s)
                if isinstance(screened, Discarded):
                    # assembled from edits that each passed ingest (a key typed in pieces)
                    counts[metrics.DISCARDED, (screened.reason,)] += 1
                    withdrawn(settled["request_id"], screened.reason)
                    continue
                record = screened
                record["pipeline_version"] = s.pipeline_version
                counts[metrics.SETTLED, (record["settle_reason"],)] += 1
                delay_ms = (ev.watermark_ms or record["settled_at_ms"]) - record["ts_ms"]
                tally.delays_s.append(max(0, delay_ms) / 1000)
                rid = record["request_id"]
                rejection = settle_rejection(cast(SettledExample, record), s)
                if rejection is not None:  # leaves here, with its content, never sampled
                    counts[metrics.REJECTED, ("settle", metrics.reason_label(rejection))] += 1
                    tally.left_at_ms.append(record["settled_at_ms"])
                    sends.append((self.rejected_topic, rid.encode(), dumps(rejected_record(
                        rid, "settle", rejection, s, example=record))))
                    continue
                sends.append((self.settled_topic, rid.encode(), dumps(record)))
                # the live scorecard of the served model, in the same write (transaction)
                card = scorecard_record(cast(SettledExample, record), s)
                if card is not None:
                    sends.append((self.scorecard_topic, rid.encode(), dumps(card)))
                    tally.scorecards.append(card)
        return sends, tally

    def _count(self, tally: _Tally, outcome: BatchOutcome, n: int, seconds: float) -> None:
        for (metric, labels), value in tally.counts.items():
            metric.labels(*labels).inc(value)
        for delay_s in tally.delays_s:
            metrics.SETTLE_DELAY.observe(delay_s)
        for settled_at_ms in tally.left_at_ms:  # end-to-end lag of the examples that left
            observe_lag({"settled_at_ms": settled_at_ms})
        if outcome.skipped:
            metrics.SETTLE_REPLAYED.inc(outcome.skipped)
        for card in tally.scorecards:
            self._observe_scorecard(card)
        metrics.OPEN_PREDICTIONS.set(self.open_total())
        stage = metrics.STAGE_SECONDS.labels("settle")
        per_event = seconds / n
        for _ in range(n):  # the histogram is per event, as it was for the Faust agent
            stage.observe(per_event)

    def _observe_scorecard(self, card: EvalRecord) -> None:
        """The served model's figures by (bounded) version, for the dashboard."""
        version = self.versions.label(card["served_model_version"])
        if version not in self.versions_seen:
            # every series of a new version is born at 0, so that its first increments
            # already have a rate on the dashboard (a counter born at 1 has none)
            self.versions_seen.add(version)
            for outcome in (*OUTCOMES, "unknown"):
                metrics.SCORECARD_PREDICTIONS.labels(version, outcome)
            metrics.SCORECARD_UNDONE.labels(version)
        metrics.SCORECARD_PREDICTIONS.labels(version, card.get("outcome") or "unknown").inc()
        if card.get("undone"):
            metrics.SCORECARD_UNDONE.labels(version).inc()
        scores = card["metrics"]
        if scores is not None:
            metrics.SCORECARD_DISTANCE.labels(version).observe(scores["distance"])
            metrics.SCORECARD_KEPT_RATE.labels(version).observe(scores["kept_rate"])
            metrics.SCORECARD_REVERSAL.labels(version).observe(scores["reversal_ratio"])

    async def _transaction(self, part: PartitionState, sends: list[tuple[str, bytes, bytes]],
                           state: list[tuple[bytes, bytes | None]], last: int) -> None:
        prod = part.producer
        assert prod is not None
        p = part.tp.partition
        await prod.begin_transaction()
        try:
            await self._send_all(prod, sends, p)
            await self._send_all(prod, [(self.changelog, k, v) for k, v in state], p)
            await prod.send_offsets_to_transaction({part.tp: last + 1}, self.group_id)
        except BaseException:
            try:
                await prod.abort_transaction()
            except Exception as exc:  # the restore that follows starts a new producer
                log.debug("settle: abort of %s failed (%r)", part.tp, exc)
            raise
        await prod.commit_transaction()

    @staticmethod
    async def _send_all(prod: AIOKafkaProducer | None,
                        sends: Sequence[tuple[str, bytes, bytes | None]], partition: int) -> None:
        """Send to `partition` of each topic and wait until every record is acknowledged."""
        assert prod is not None
        await send_all(prod, ((topic, partition, key, value, None)
                              for topic, key, value in sends))

    # ---- idle ticks, metrics ----------------------------------------------------------------

    @mode.Service.task
    async def _idle_ticks(self) -> None:
        s = self.settings
        interval = max(0.05, s.idle_tick_ms / 1000 / 2)
        while not self.should_stop:
            await self.sleep(interval)
            ticks: list[tuple[int, bytes]] = []
            async with self.lock:
                now = time.time()
                for partition, part in self.parts.items():
                    if part.anchor is None or part.machine.due_ms() is None:
                        continue
                    wall, wm = part.anchor
                    idle_for = (now - wall) * 1000
                    if idle_for < s.idle_tick_ms:
                        continue
                    tick = {"v": 1, "type": "control", "op": "tick",
                            "session_id": "__control__", "ts_ms": wm + int(idle_for),
                            "can_collect_data": False, "watermark_ms": wm + int(idle_for)}
                    ticks.append((partition, dumps(tick)))
            try:
                for partition, value in ticks:
                    await self._send_all(self.producer, [(self.source, CONTROL_KEY, value)],
                                         partition)
            except Exception as exc:  # broker away: the next round tries again
                log.warning("settle: idle tick not written (%r)", exc)

    def open_total(self) -> int:
        return sum(part.machine.open_count for part in self.parts.values())

    async def lag(self) -> dict[TopicPartition, int]:
        """Records of `edit-events` not yet committed by the settle group, per assigned
        partition (`agents.lag.runner_lag`)."""
        return await runner_lag(self.consumer, {self.source}, self.committed)


def register(app: faust.App, rt: Runtime) -> SettleRunner:
    """Create the settle runner and have the app start and stop it (see the docstring)."""
    runner = SettleRunner(rt)
    rt.settle = runner
    app.service(runner)  # type: ignore[arg-type]  # an instance works: started as it is
    return runner
