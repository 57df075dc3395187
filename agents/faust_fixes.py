"""Corrections to faust-streaming's exactly-once commit, applied when the app is built.

Table changelog writes are buffered (`send_soon`) and published by a background task. In
at-least-once mode faust flushes that buffer before committing offsets; in exactly-once mode
it does not, so a commit can carry the source offsets while the changelog writes of the
events it covers are still in the buffer. They then land in the *next* transaction, and a
crash before that one commits loses them while the offsets stay committed: state silently
goes back in time (seen in tests/integration/test_reliability.py's kill -9 test as settled
examples that never settle). Flushing first puts them in the transaction they belong to.
The app has no Faust table any more (settle state left Faust with the settle stage, below);
the flush stays so that anything buffered in the producer commits with the offsets it
belongs to.

Recovery under exactly-once takes each changelog partition's end from aiokafka's cached last
stable offset, which is unknown (-1) for a partition this consumer has not fetched yet, as
after joining a group: faust then restores nothing and the worker carries on with an empty
table (seen in the two-worker test as predictions that never settle). Asking the broker
(ListOffsets, read_committed) gives the real end.

When offsets jump (transaction markers, aborted records), faust records the skipped range as
acknowledged so commits can pass it, but the range it records ends *at* the record that
revealed the jump, which is only about to be processed. A commit while that record is in
flight moves past it, and a crash then loses it (seen in the kill -9 test as a student
sample that was never scored). The range should stop one short; this does that.

After a rebalance faust resumes the stream partitions, seeks them to their committed offsets
and only then resumes flow control, which empties every agent's queue (`clear_on_resume`).
A record fetched in between is dropped from the queue without being acknowledged or fetched
again, and faust's commit tolerates one missing offset after the committed one (for
transaction markers), so the next record's commit passes it: lost (seen in the kill -9 test
as a student sample delivered to the score agent's queue and never scored; the worker's trace
showed its delivery between the seek and the resume). Queues only need emptying when flow
was suspended (a revoke suspends and empties them itself); resuming flow that is already
running now keeps what is queued.

The commit offset of a partition is the end of the first run of consecutive acknowledged
offsets, but faust lets that run start one past the committed offset, taking the offset in
between for a transaction marker. It can equally be a record still being processed: with an
agent's concurrency above 1 (distill runs 4), a record waiting on a slow teacher is passed by
the commit of the two after it, and a crash before its outputs commit loses it (seen in the
chaos run, bench/chaos.py: an example scored, its repair record in an aborted transaction,
the scored-examples offset committed past it). A record delivered to a stream and not yet
acknowledged now holds the commit back. Before a partition's first commit faust skips that
check altogether and commits from the lowest acknowledged offset, wherever it is: the chaos
run saw the first four records of a scored-examples partition never processed and the first
commit at 11 (how they left the agent's queue unprocessed was not traced; a rebalance's
queue clearing is the suspect). Until a partition has a commit, a commit must now start at
the first record delivered since the partitions were last seeked to their commits (not the
log start: a partition can begin with an aborted transaction, invisible to read_committed),
so records that went missing hold the commit back until the next rebalance fetches them
again, instead of being lost.

On a revoke faust commits and *ends* every transaction (`commit_and_end_transactions`) and
begins them again only once the new assignment is known; its periodic commit can run in
between and asks a producer that is not in a transaction to add offsets to it: aiokafka
raises IllegalOperation and the worker crashes (seen in the chaos run, bench/chaos.py, as
workers exiting after a rebalance, about one rebalance in four). Such a producer has nothing
to commit (the end of its transaction committed its offsets; a send since would have failed),
so its offsets are left for the next commit.

When a service of the worker crashes (faust's consumer on a failed commit, the app on a
fenced producer), faust stops the worker gracefully: agents are cancelled mid-record, their
streams acknowledge the record on the way out, model clients close under handlers still
running (which then fail), and the stop commits the offsets. The chaos run saw a fenced
zombie's crash commit records whose handlers never finished, and dead letters for records
the clean run processed. A crash now ends the process at once, as kill -9 would: nothing is
committed, open transactions are aborted, the partitions' next owners redo the work.

(Settle and the stages after it no longer run on Faust: agents/settle.py and agents/stages.py
are plain aiokafka runners with their own transactions. These corrections protect what
still does, the model-retry agent.)
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

from faust.transport.consumer import Consumer, TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode import Service
from mode.utils.queues import FlowControlEvent

# exit status of a worker that ended on a crash instead of stopping gracefully
EXIT_CRASH = 70
_original_crash = Service.crash
_original_commit = TransactionManager.commit
_original_add_gap = Consumer._add_gap
_original_new_offset = Consumer._new_offset
_original_seek_to_committed = AIOKafkaConsumerThread.seek_to_committed
_original_track_message = Consumer.track_message


async def _commit_after_flush(self: TransactionManager, offsets: Mapping[Any, int],
                              start_new_transaction: bool = True) -> bool:
    await self.app.producer.flush()
    offsets = {tp: o for tp, o in offsets.items() if not _between_transactions(self, tp)}
    return await _original_commit(self, offsets, start_new_transaction=start_new_transaction)


def _between_transactions(self: TransactionManager, tp: Any) -> bool:
    """True when the producer of `tp`'s transactional id exists but is not in a transaction
    (faust names it as in TransactionManager.commit)."""
    group = self.app.assignor.group_for_topic(tp.topic)
    tid = f"{self.app.conf.id}-{group}-{tp.partition}"
    producer = getattr(self.producer, "_transaction_producers", {}).get(tid)
    return producer is not None and not producer._txn_manager.is_in_transaction()


async def _highwaters_from_broker(self: AIOKafkaConsumerThread,
                                  partitions: list[Any]) -> Mapping[Any, int]:
    # the consumer is read_committed under exactly-once, so this is the last stable offset
    return await self._ensure_consumer().end_offsets(partitions)  # type: ignore[no-any-return]


async def _add_gap_before(self: Consumer, tp: Any, offset_from: int, offset_to: int) -> None:
    # faust passes the offset of the record that revealed the gap; that record is not acked
    await _original_add_gap(self, tp, offset_from, offset_to - 1)


def _new_offset_behind_in_flight(self: Consumer, tp: Any) -> int | None:
    acked = self._acked[tp]
    if acked:
        lowest = min(acked)
        if any(m.tp == tp and not m.acked and m.offset < lowest
               for m in list(self._unacked_messages)):
            return None  # the run of acknowledged offsets would pass a record in flight
        first = getattr(self, "_first_seen", {}).get(tp)
        if self._committed_offset[tp] is None and first is not None and lowest > first:
            return None  # nothing committed yet: the run must begin at the first record
    return _original_new_offset(self, tp)  # type: ignore[no-any-return]


def _track_remembering_first(self: Consumer, message: Any) -> None:
    """Remember each partition's first record delivered since the last seek."""
    self.__dict__.setdefault("_first_seen", {}).setdefault(message.tp, message.offset)
    _original_track_message(self, message)


async def _seek_forgetting_first(self: AIOKafkaConsumerThread) -> Mapping[Any, int]:
    """Seek to the commits: what is delivered next is each partition's first record."""
    committed: Mapping[Any, int] = await _original_seek_to_committed(self)
    self.consumer.__dict__.get("_first_seen", {}).clear()
    return committed


async def _crash_exits(self: Service, reason: BaseException) -> None:
    if self.supervisor is None and not isinstance(reason, asyncio.CancelledError):
        # a supervised agent restarts; an unsupervised crash would stop the whole worker
        logging.getLogger(__name__).critical(
            "%s crashed (%s): exiting at once, without the graceful stop's commit",
            type(self).__name__, type(reason).__name__)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_CRASH)
    await _original_crash(self, reason)


def _resume_keeping_queued(self: FlowControlEvent) -> None:
    was_suspended = self._suspend.is_set()
    self._suspend.clear()
    self._resume.set()
    if was_suspended:  # what was queued before the suspension belongs to the old assignment
        self.clear()


def apply() -> None:
    """Idempotent: install the corrections once."""
    if TransactionManager.commit is not _commit_after_flush:
        TransactionManager.commit = _commit_after_flush  # type: ignore[method-assign]
    if Consumer._add_gap is not _add_gap_before:
        Consumer._add_gap = _add_gap_before  # type: ignore[method-assign]
    if Service.crash is not _crash_exits:
        Service.crash = _crash_exits  # type: ignore[method-assign]
    if Consumer._new_offset is not _new_offset_behind_in_flight:
        Consumer._new_offset = _new_offset_behind_in_flight  # type: ignore[method-assign]
    if AIOKafkaConsumerThread.seek_to_committed is not _seek_forgetting_first:
        AIOKafkaConsumerThread.seek_to_committed = (  # type: ignore[method-assign]
            _seek_forgetting_first)
    if Consumer.track_message is not _track_remembering_first:
        Consumer.track_message = _track_remembering_first  # type: ignore[method-assign]
    if FlowControlEvent.resume is not _resume_keeping_queued:
        FlowControlEvent.resume = _resume_keeping_queued  # type: ignore[method-assign]
    if AIOKafkaConsumerThread._highwaters is not _highwaters_from_broker:
        AIOKafkaConsumerThread._highwaters = _highwaters_from_broker  # type: ignore[method-assign]
