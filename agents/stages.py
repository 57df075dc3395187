"""The stages after settle — sample, score, distill, repair, and the retry of model outages —
on plain aiokafka inside the Faust worker, as the settle runner (agents/settle.py) does for
settle.

Why not Faust agents: per example, Faust's delivery and commits cost ~0.7 ms of the worker's
CPU, and under exactly_once its transactional producer per partition *per topic* sends nearly
every record in its own produce request (~4.7 ms of broker CPU per example). This runner
writes the outputs of many records of a partition, of all its source topics, in one transaction.

Wiring: `register` builds one `StageRunner` (a `mode.Service`) and hands it to the app with
`app.service`. It has its own consumer group, `<app_id>-stages` (`schemas.topics.
stages_group`), subscribed to the five source topics (`STAGE_SOURCES`) with aiokafka's
`RangePartitionAssignor`: every topic has the same partition count, so partition p of every
stage topic goes to the same worker, and a record's outputs go to its source partition
number (`Runtime.send`).

`model-retry` is a stage like the others (agents/retry.py): its handler waits until the
record is due (up to 300 s), then runs the record's stage again. A waiting record holds
neither a slot of its stage's concurrency nor of `max_examples_in_flight` (the stage's
concurrency is its queue: `RETRY_WAITING`), and holds back only the commits of the
`model-retry` partition it is on. It was a Faust agent until the chaos run lost retried
examples in Faust's commit path (RELIABILITY.md, "Retried examples acknowledged and never
written"): now its outputs commit with its offset, like every other stage's.

Records: each fetched record becomes a task running the stage's handler (the same ones the
retry stage calls) through `agents.stage.handle_one` (dead letters, client-failure exits,
`editstream_stage_seconds`, a slot of `max_examples_in_flight`), at most the stage's
concurrency at once (`sample_concurrency`, `cpu_processes` for score, `distill_concurrency`
for distill and repair), so a slow model call stalls no other record. A handler does not
send: `rt.send` and friends append to the task's `runtime.CURRENT_RECORD`. Backpressure: a
stage holding `queue_limit` records not yet committed has its partitions paused until it
drops below; nothing is buffered beyond that and one fetch.

Commits: per source partition, the records are kept in offset order (`agents.inorder`);
a record's outputs are written only when every earlier record of its partition is done, and
with them the offset after it. Per partition number p a flusher takes the done prefix of the
five topics' partitions p and writes it at once, at most once per
`stage_commit_interval_ms` (100 ms: one transaction per finished record would cost the broker
more than the records themselves at low load); while one write is in flight or waits for
its turn the next records finish and join the following one, so batches grow with load.

* exactly_once (Apache Kafka): one transactional producer per partition number,
  `transactional_id=<app_id>-stages-<p>`, started on assignment (it fences a predecessor and
  aborts its open transaction). A flush is one transaction: the outputs, then
  `send_offsets_to_transaction` for the prefix's partitions, then commit.
* at_least_once (Tansu, no transactions): one idempotent producer; a flush sends the outputs,
  awaits their acks, then commits the offsets with the consumer.

Upgrade: a partition the group has never committed starts at the offset Faust's group
`<app_id>` (which ran these stages before) committed for it, if any. Stop the old workers
before starting new ones: both versions at once would each handle the stage topics.

Failures: a handler's exception is its record's dead letter (`internal_error`), written and
committed with it; a Kafka client failure — in a handler, a write, the transaction, a fenced
producer — exits the worker (75, `agents.stage.exit_on_client_failure`) and the partition's
next owner does again what was not committed. Revocation: the done prefix is flushed if it
can be, the other records' tasks are cancelled and the partition's producer stopped; what
was not committed is redone by the new owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import faust
import mode
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import ConsumerStoppedError

from agents import metrics
from agents.cpu import CpuPool
from agents.distill import distill_one
from agents.inorder import InOrder
from agents.kafka import Rebalance, send_all, start_producer
from agents.kafka_security import describe_failure, exit_refused, kafka_client_config
from agents.lag import runner_lag
from agents.repair import repair_one
from agents.retry import retry_one
from agents.runtime import CURRENT_RECORD, Output, Record, Runtime
from agents.sample import sample_one
from agents.score import score_one
from agents.stage import exit_on_client_failure, handle_one
from schemas.records import ModelRetry, RepairRequest, ScoredExample, SettledExample
from schemas.topics import STAGE_SOURCES, app_group, stages_group

MAX_RECORDS = 1000  # per fetch, over all partitions
FETCH_TIMEOUT_MS = 100  # how soon a paused stage is looked at again when nothing comes
QUEUE_PER_SLOT = 16  # records a stage holds uncommitted, per unit of its concurrency
MIN_QUEUE = 256
# `model-retry` records held at once, waiting for their time or running (they take their
# slot of `max_examples_in_flight` only once due: agents/retry.py)
RETRY_WAITING = MIN_QUEUE
log = logging.getLogger(__name__)


@dataclass
class Stage:
    """One stage the runner runs: its source topic (full name) and handler."""

    name: str
    source: str
    handle: Callable[[Any], Awaitable[None]]
    decode: Callable[[bytes], Any]
    concurrency: int
    bounded: bool = True  # a slot of `max_examples_in_flight` for the whole handling
    queue: int | None = None  # records held uncommitted (default: per unit of concurrency)
    slots: asyncio.Semaphore = field(init=False)
    queued: int = 0  # records fetched and not yet committed or dropped

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.concurrency)

    @property
    def queue_limit(self) -> int:
        if self.queue is not None:
            return self.queue
        return max(MIN_QUEUE, QUEUE_PER_SLOT * self.concurrency)


def _raw(value: bytes) -> bytes:
    return value


def training_stages(rt: Runtime, pool: CpuPool) -> list[Stage]:
    """Sample, score, distill, repair and retry: the stages on `STAGE_SOURCES`."""
    s = rt.settings
    specs: list[tuple[str, str, Callable[[Any], Awaitable[None]], Callable[[bytes], Any],
                      int]] = [
        ("sample", "settled-examples",
         lambda ex: sample_one(rt, cast(SettledExample, ex)), orjson.loads,
         s.sample_concurrency),
        # two per pool process keep it busy while a result travels back (one on the loop)
        ("score", "student-samples", lambda value: score_one(rt, pool, value), _raw,
         max(1, 2 * s.cpu_processes)),
        ("distill", "scored-examples",
         lambda sc: distill_one(rt, cast(ScoredExample, sc)), orjson.loads,
         s.distill_concurrency),
        ("repair", "repair", lambda req: repair_one(rt, cast(RepairRequest, req)),
         orjson.loads, s.distill_concurrency),
        ("retry", "model-retry", lambda rec: retry_one(rt, cast(ModelRetry, rec)),
         orjson.loads, RETRY_WAITING),
    ]
    assert tuple(src for _, src, _, _, _ in specs) == STAGE_SOURCES
    stages = [Stage(name, s.topic(src), handle, decode, conc)
              for name, src, handle, decode, conc in specs]
    retry = stages[-1]
    retry.bounded, retry.queue = False, RETRY_WAITING
    return stages


@dataclass
class Partition:
    """What the runner holds for one partition number p (the five topics' partitions p)."""

    number: int
    producer: AIOKafkaProducer | None  # exactly_once: its transactional producer
    order: dict[TopicPartition, InOrder[list[Output]]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one flush at a time
    flusher: asyncio.Task[None] | None = None


class StageRunner(mode.Service):
    """Stages on one consumer group (see the module docstring): by default the training
    stages after settle (`training_stages`, group `<app_id>-stages`); the eval stage runs
    on another instance with its own group (agents/evaluate.py)."""

    def __init__(self, rt: Runtime, stages: list[Stage] | None = None,
                 group_id: str | None = None, name: str = "stages", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        s = rt.settings
        self.rt = rt
        self.settings = s
        self.name = name
        self.exactly_once = s.processing_guarantee == "exactly_once"
        self.group_id = group_id or stages_group(s)
        self.pool: CpuPool | None = None
        if stages is None:
            self.pool = CpuPool(s.cpu_processes)
            stages = training_stages(rt, self.pool)
        # only the training stages ran in Faust's group before (the upgrade path)
        self.legacy_group = group_id is None
        self.stages = {stage.source: stage for stage in stages}
        self.parts: dict[int, Partition] = {}
        self.committed: dict[TopicPartition, int] = {}  # the group's offsets, as we know them
        self.lock = asyncio.Lock()  # rebalances and stop, one at a time
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None  # at_least_once: the outputs' producer

    # ---- lifecycle --------------------------------------------------------------------------

    async def on_start(self) -> None:
        s = self.settings
        if not self.exactly_once:
            self.producer = await start_producer(s, linger_ms=0)
        self.consumer = AIOKafkaConsumer(
            **kafka_client_config(s), group_id=self.group_id,
            client_id=f"{s.app_id}-{self.name}", enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if self.exactly_once else "read_uncommitted",
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=int(min(3.0, s.session_timeout_s / 3) * 1000),
            rebalance_timeout_ms=60_000, request_timeout_ms=90_000,
            max_partition_fetch_bytes=8 << 20, fetch_max_bytes=64 << 20)
        await self.consumer.start()
        # after start, so the join does not hold up the app's next service (agents/settle.py)
        self.consumer.subscribe(list(self.stages), listener=Rebalance(self, "stages"))

    async def on_stop(self) -> None:
        async with self.lock:  # flush what is done while the group still holds the partitions
            for part in list(self.parts.values()):
                await self._drop(part)
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            self.pool.close()

    # ---- rebalances -------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.lock:
            for number in sorted({tp.partition for tp in revoked}):
                part = self.parts.get(number)
                if part is not None:
                    await self._drop(part)
            for tp in revoked:
                self.committed.pop(tp, None)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        async with self.lock:
            new: list[TopicPartition] = []
            for tp in sorted(assigned):
                if tp.topic not in self.stages:
                    continue
                part = self.parts.get(tp.partition)
                if part is None:
                    part = await self._open(tp.partition)
                if tp not in part.order:
                    part.order[tp] = InOrder()
                    new.append(tp)
            await self._start_where_faust_left(new)

    async def _start_where_faust_left(self, tps: list[TopicPartition]) -> None:
        """A partition this group has never committed starts where Faust's group (that ran
        these stages before this runner) left it, not at the earliest offset: an upgrade
        must not send every example the Faust agents handled through the models again."""
        consumer = self.consumer
        if not tps or consumer is None or not self.legacy_group:
            return
        fresh = [tp for tp in tps if await consumer.committed(tp) is None]
        if not fresh:
            return
        legacy = AIOKafkaConsumer(**kafka_client_config(self.settings),
                                  group_id=app_group(self.settings), enable_auto_commit=False)
        try:
            await legacy.start()
            for tp in fresh:
                offset = await legacy.committed(tp)
                if offset is not None:
                    consumer.seek(tp, offset)
                    self.parts[tp.partition].order[tp].last = offset - 1  # nothing before it
                    log.info("stages: %s starts at %d, where the Faust group left it", tp,
                             offset)
        except Exception as exc:  # a broker without group offsets: the earliest, as before
            log.warning("stages: the Faust group's offsets not read (%r)", exc)
        finally:
            await legacy.stop()

    async def _open(self, number: int) -> Partition:
        """The partition number's state; under exactly_once its transactional producer,
        started now: that fences its predecessor (a crashed or stale worker) and aborts its
        open transaction before any record of p is fetched here."""
        producer = None
        if self.exactly_once:
            delay = 0.5
            while True:
                producer = AIOKafkaProducer(
                    **kafka_client_config(self.settings),
                    transactional_id=f"{self.group_id}-{number}", enable_idempotence=True,
                    acks="all", linger_ms=0, max_request_size=4 * 1024 * 1024,
                    request_timeout_ms=90_000)
                try:
                    await producer.start()
                    break
                except Exception as exc:
                    await producer.stop()
                    if self.should_stop:
                        raise
                    if (refused := describe_failure(exc, self.settings)) is not None:
                        exit_refused(self.name, refused)  # an ACL taken away: retrying cannot help
                    log.warning("%s: producer of partition %d not started (%r); retrying",
                                self.name, number, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        part = Partition(number, producer)
        part.flusher = asyncio.create_task(self._flusher(part), name=f"{self.name}-flush-{number}")
        self.parts[number] = part
        return part

    async def _drop(self, part: Partition) -> None:
        """Give the partition number up: flush its done prefix if possible, cancel the rest,
        stop its producer (what is not committed is the next owner's to do)."""
        self.parts.pop(part.number, None)
        async with part.lock:  # the flush in flight ends first
            if part.flusher is not None:
                part.flusher.cancel()
            try:
                await self._flush(part)
            except Exception as exc:  # fenced or broker gone: the next owner redoes it
                log.warning("%s: last flush of partition %d failed (%r)", self.name,
                            part.number, exc)
        for task in part.tasks:
            task.cancel()
        await asyncio.gather(*part.tasks, return_exceptions=True)
        for tp, order in part.order.items():
            self.stages[tp.topic].queued -= len(order)
        part.order.clear()
        if part.producer is not None:
            try:
                await part.producer.stop()
            except Exception as exc:  # a fenced or broken producer: nothing to keep anyway
                log.debug("stages producer %d stopped with %r", part.number, exc)

    # ---- records ----------------------------------------------------------------------------

    @mode.Service.task
    async def _consume(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.should_stop:
            self._backpressure(consumer)
            try:
                batch = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS,
                                               max_records=MAX_RECORDS)
            except ConsumerStoppedError:
                return
            # under the rebalance lock: the fetcher starts on a new assignment before the
            # callback has started its partitions' producers (after a crash that can take
            # seconds: the predecessor's transaction is aborted first)
            async with self.lock:
                self._dispatch(consumer, batch)

    def _dispatch(self, consumer: AIOKafkaConsumer, batch: dict[TopicPartition, list[Any]]
                  ) -> None:
        """A task per fetched record, in offset order per partition."""
        for tp, records in batch.items():
            part = self.parts.get(tp.partition)
            order = part.order.get(tp) if part is not None else None
            if part is None or order is None:
                if tp in consumer.assignment():  # never skip an owned record: fetch it again
                    consumer.seek(tp, records[0].offset)
                continue  # else revoked while the fetch was on its way
            stage = self.stages[tp.topic]
            for rec in records:
                if order.add(rec.offset):
                    stage.queued += 1
                    task = asyncio.create_task(self._handle(part, order, stage, rec))
                    part.tasks.add(task)
                    task.add_done_callback(part.tasks.discard)

    def _backpressure(self, consumer: AIOKafkaConsumer) -> None:
        """Pause the partitions of a stage that holds its `queue_limit` of records, resume
        them once it is below."""
        assigned = consumer.assignment()
        for topic, stage in self.stages.items():
            tps = [tp for tp in assigned if tp.topic == topic]
            if stage.queued >= stage.queue_limit:
                consumer.pause(*tps)
            else:
                consumer.resume(*tps)

    async def _handle(self, part: Partition, order: InOrder[list[Output]], stage: Stage,
                      msg: Any) -> None:
        record = Record(msg.topic, msg.partition, msg.offset, msg.headers or ())
        CURRENT_RECORD.set(record)  # this task's own context
        async with stage.slots:
            await handle_one(self.rt, stage.name, stage.handle, stage.decode, msg,
                             stage.bounded)
        order.done(msg.offset, record.outputs)
        part.wake.set()

    # ---- writes -----------------------------------------------------------------------------

    async def _flusher(self, part: Partition) -> None:
        interval = self.settings.stage_commit_interval_ms / 1000
        last = -interval
        while True:
            await part.wake.wait()
            # at most one write per interval: what finishes meanwhile joins the next one
            if (wait := last + interval - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            part.wake.clear()
            last = time.monotonic()
            async with part.lock:
                try:
                    await self._flush(part)
                except Exception as exc:
                    exit_on_client_failure(self.name, exc)

    async def _flush(self, part: Partition) -> None:
        """Write the done prefix of every source partition of `part`, with its offsets."""
        outputs: list[Output] = []
        offsets: dict[TopicPartition, int] = {}
        taken: list[tuple[Stage, int]] = []
        for tp, order in part.order.items():
            results, after = order.take()
            if after is None:
                continue
            offsets[tp] = after
            taken.append((self.stages[tp.topic], len(results)))
            for outs in results:
                outputs.extend(outs)
        if not offsets:
            return
        try:
            if self.exactly_once:
                prod = part.producer
                assert prod is not None
                await prod.begin_transaction()
                await self._send_all(prod, outputs)
                await prod.send_offsets_to_transaction(offsets, self.group_id)
                await prod.commit_transaction()
            else:
                await self._send_all(self.producer, outputs)
                assert self.consumer is not None
                try:
                    await self.consumer.commit(offsets)
                except Exception as exc:  # a rebalance in between: the next owner redoes it
                    log.warning("%s: offset commit of partition %d failed (%r)",
                                self.name, part.number, exc)
                    return
        finally:
            for stage, n in taken:
                stage.queued -= n
        self.committed.update(offsets)
        metrics.STAGE_COMMITS.inc()

    @staticmethod
    async def _send_all(prod: AIOKafkaProducer | None, outputs: list[Output]) -> None:
        """Send every output and wait until the broker has acknowledged them all."""
        assert prod is not None
        await send_all(prod, outputs)

    async def lag(self) -> dict[TopicPartition, int]:
        """Records of the stage topics not yet committed by the stages group, per assigned
        partition (`agents.lag.runner_lag`)."""
        return await runner_lag(self.consumer, set(self.stages), self.committed)


def register(app: faust.App, rt: Runtime) -> StageRunner:
    """Create the stage runner and have the app start and stop it (see the docstring)."""
    runner = StageRunner(rt)
    rt.stages = runner
    app.service(runner)  # type: ignore[arg-type]  # an instance works: started as it is
    return runner
