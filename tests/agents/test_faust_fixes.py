"""agents.faust_fixes: the gap a jump in offsets leaves stops before the record that showed it;
resuming flow that already runs keeps the agents' queued records; a commit never passes a
record still in flight; a commit between a revoke's
end of the transactions and their new beginning leaves out the producers not in one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.producer.transaction_manager import TransactionManager as TxnState
from faust.transport.consumer import Consumer, TransactionManager
from faust.types import TP
from intervaltree import IntervalTree
from mode.utils.queues import FlowControlEvent, FlowControlQueue

from agents import faust_fixes


def _gap_after(read_offset: int, offset: int) -> set[int]:
    """Offsets marked as acknowledged when `offset` arrives after `read_offset`."""
    faust_fixes.apply()
    fake: Any = SimpleNamespace(_committed_offset=defaultdict(lambda: None),
                                _gap=defaultdict(IntervalTree))
    asyncio.run(Consumer._add_gap(fake, "tp", read_offset + 1, offset))
    return {o for iv in fake._gap["tp"] for o in range(iv.begin, iv.end)}


def test_the_record_that_reveals_a_gap_is_not_acknowledged() -> None:
    # a transaction marker at 5: the next record, 6, must still be processed before commit
    assert _gap_after(4, 6) == {5}
    assert _gap_after(10, 20) == set(range(11, 20))


def test_apply_is_idempotent() -> None:
    faust_fixes.apply()
    patched = Consumer._add_gap
    faust_fixes.apply()
    assert Consumer._add_gap is patched


def test_resuming_running_flow_keeps_queued_records() -> None:
    faust_fixes.apply()

    async def run() -> tuple[int, int]:
        flow = FlowControlEvent()  # starts suspended, as the app's does
        queue: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
        queue.put_nowait(1)  # queued under the old assignment
        flow.resume()
        after_suspension = queue.qsize()
        queue.put_nowait(2)  # fetched after the seek, before recovery resumes flow again
        flow.resume()
        return after_suspension, queue.qsize()

    after_suspension, after_second_resume = asyncio.run(run())
    assert after_suspension == 0  # a suspension still empties the queues
    assert after_second_resume == 1


async def test_a_commit_between_transactions_leaves_their_offsets_for_later() -> None:
    """The chaos run's crash: faust's periodic commit after a revoke ended the transactions
    asked aiokafka to add offsets to a producer outside any transaction (IllegalOperation)."""
    faust_fixes.apply()
    in_txn, ended = TxnState("app-g-0", 60_000), TxnState("app-g-1", 60_000)
    for state in (in_txn, ended):
        state.set_pid_and_epoch(1, 0)
    in_txn.begin_transaction()  # `ended` is READY: its transaction was committed and ended
    committed: list[dict[str, Any]] = []

    async def flush() -> None:
        return None

    async def commit_transactions(by_tid: dict[str, Any], group_id: str,
                                  start_new_transaction: bool = True) -> None:
        committed.append(dict(by_tid))

    producer = SimpleNamespace(
        _transaction_producers={"app-g-0": SimpleNamespace(_txn_manager=in_txn),
                                "app-g-1": SimpleNamespace(_txn_manager=ended)},
        commit_transactions=commit_transactions)
    app = SimpleNamespace(conf=SimpleNamespace(id="app"), producer=SimpleNamespace(flush=flush),
                          assignor=SimpleNamespace(group_for_topic=lambda topic: "g"))
    fake: Any = SimpleNamespace(app=app, producer=producer)
    tp0, tp1 = TP("t", 0), TP("t", 1)
    await TransactionManager.commit(fake, {tp0: 10, tp1: 20})
    assert committed == [{"app-g-0": {tp0: 10}}]


def _commit_offset(committed: int | None, acked: list[int], in_flight: list[int],
                   first_seen: int | None = None) -> Any:
    """The offset faust would commit for partition `tp` in this state."""
    faust_fixes.apply()
    tp = TP("t", 0)
    messages = [SimpleNamespace(tp=tp, offset=o, acked=False) for o in in_flight]
    fake: Any = SimpleNamespace(_acked=defaultdict(list, {tp: list(acked)}),
                                _acked_index=defaultdict(set, {tp: set(acked)}),
                                _gap=defaultdict(IntervalTree),
                                _committed_offset=defaultdict(lambda: None, {tp: committed}),
                                _unacked_messages=messages)
    if first_seen is not None:
        fake._first_seen = {tp: first_seen}
    return Consumer._new_offset(fake, tp)


def test_a_commit_never_passes_a_record_still_in_flight() -> None:
    """The chaos run's loss: 235 waited on the teacher while 236 and 237, handled by the
    distill agent's other actors, were acknowledged; faust committed 238."""
    assert _commit_offset(235, [236, 237], in_flight=[235]) is None
    assert _commit_offset(None, [236, 237], in_flight=[235]) is None
    # one offset after the committed one that no stream holds is a transaction marker: passed
    assert _commit_offset(235, [236, 237], in_flight=[]) == 238
    # a record in flight after the acknowledged run stops nothing before it
    assert _commit_offset(235, [235, 236, 238], in_flight=[237]) == 237


def test_before_the_first_commit_a_commit_starts_at_the_first_record() -> None:
    """The chaos run's other loss: 0-3 never processed, the first commit at 11."""
    assert _commit_offset(None, [4, 5, 6], in_flight=[], first_seen=0) is None
    assert _commit_offset(None, [0, 1, 2], in_flight=[], first_seen=0) == 3
    # a partition that begins with an aborted transaction: its first visible record is 2
    assert _commit_offset(None, [2, 3], in_flight=[], first_seen=2) == 4
    assert _commit_offset(None, [4, 5, 6], in_flight=[]) == 7  # nothing delivered: as before


CRASH = """
import asyncio, sys
from mode import Service
from agents import faust_fixes
faust_fixes.apply()
reason = {"error": RuntimeError("commit failed"), "cancel": asyncio.CancelledError()}[sys.argv[1]]
asyncio.run(Service().crash(reason))
print("GRACEFUL_STOP_PATH", flush=True)
"""


@pytest.mark.parametrize(("reason", "code"), [("error", faust_fixes.EXIT_CRASH), ("cancel", 0)])
def test_a_crash_ends_the_worker_at_once(reason: str, code: int) -> None:
    """The chaos run's third loss: a crashed worker's graceful stop committed records whose
    handlers it had cancelled. A crash (not a cancellation) now exits before any of that."""
    done = subprocess.run([sys.executable, "-c", CRASH, reason], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == code, done.stderr
    assert ("GRACEFUL_STOP_PATH" in done.stdout) == (code == 0)
