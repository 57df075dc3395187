"""The settle runner applies a fetched batch in chunks and lets the event loop run between
them, with exactly the outcome of applying the batch in one go (agents/settle.py).

The runner's Kafka side is covered by the integration tests; here only its batch path runs,
on generated events as a fetch would hand them over (offset + value bytes).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition

from agents import settle
from agents.runtime import Runtime
from agents.settle import PartitionState, SettleRunner
from editstream.sessions.generate import GenerateConfig, generate_events
from streams.emit import rejected_record
from streams.settings import Settings
from streams.settle import StagedStore

FLUSH = {"v": 1, "type": "control", "op": "flush", "session_id": "__control__", "ts_ms": 0,
         "can_collect_data": False}


@dataclass(frozen=True)
class Rec:
    offset: int
    value: bytes


def _records() -> list[Rec]:
    values = [orjson.dumps(e) for e in generate_events(GenerateConfig(seed=5, sessions=8))]
    values.insert(17, b"{not json")  # a dead letter in the middle of a chunk
    values.append(orjson.dumps(FLUSH))  # settles everything still open
    return [Rec(i, v) for i, v in enumerate(values)]


def _runner() -> tuple[SettleRunner, PartitionState]:
    runner = SettleRunner(Runtime(settings=Settings(), app=None))  # type: ignore[arg-type]
    store = StagedStore({})
    part = PartitionState(TopicPartition(runner.source, 0), store, runner._machine(store),
                          None, None)
    return runner, part


async def _apply(records: list[Rec]) -> tuple[Any, list[tuple[str, bytes, bytes]], Any]:
    runner, part = _runner()
    return await runner._apply_chunked(part, records)


async def test_runner_yields_to_the_loop_between_chunks(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setattr(settle, "CHUNK_RECORDS", 50)
    records = _records()
    chunks = -(-len(records) // 50)
    ticks = 0
    running = True

    async def other_task() -> None:  # stands for the Faust stages, heartbeats, the probe
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_task())
    await asyncio.sleep(0)
    before = ticks
    await _apply(records)
    during = ticks - before
    running = False
    await task
    assert chunks > 3
    assert during >= chunks - 1  # it ran at every chunk boundary, not only after the batch


async def test_chunked_batch_gives_the_one_pass_outcome(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    records = _records()
    monkeypatch.setattr(settle, "CHUNK_RECORDS", len(records))
    whole, whole_sends, whole_tally = await _apply(records)
    monkeypatch.setattr(settle, "CHUNK_RECORDS", 37)
    chunked, sends, tally = await _apply(records)
    settled = [v for t, _, v in sends if t.endswith("settled-examples")]
    assert settled and any(t.endswith("edit-events-dlq") for t, _, _ in sends)
    assert sends == whole_sends  # same records, same order, same bytes
    assert chunked.writes == whole.writes and chunked.applied == whole.applied == len(records) - 1
    assert chunked.anchor_ms == whole.anchor_ms and chunked.skipped == whole.skipped
    assert [e.offset for e in chunked.events] == [e.offset for e in whole.events]
    assert tally.counts == whole_tally.counts and tally.delays_s == whole_tally.delays_s


async def test_settle_reason_rejections_leave_at_settle_with_their_example() -> None:
    """An example settled for a reason in `reject_settle_reasons` is rejected by the settle
    stage itself, with the record the sample stage used to write for it (the settled example
    inside), and never reaches settled-examples (streams/route.py)."""
    records = _records()
    runner, part = _runner()
    _, sends, tally = await runner._apply_chunked(part, records)
    keep_all = Settings(reject_settle_reasons=())
    runner_all = SettleRunner(Runtime(settings=keep_all, app=None))  # type: ignore[arg-type]
    store = StagedStore({})
    part_all = PartitionState(TopicPartition(runner_all.source, 0), store,
                              runner_all._machine(store), None, None)
    _, sends_all, _ = await runner_all._apply_chunked(part_all, records)

    settled_all = [orjson.loads(v) for t, _, v in sends_all if t.endswith("settled-examples")]
    leaving = [ex for ex in settled_all if ex["settle_reason"] in ("ttl", "context_lost")]
    assert leaving and len(leaving) < len(settled_all)
    s = Settings()
    expected = [(s.topic("rejected-examples"), ex["request_id"].encode(), orjson.dumps(
        rejected_record(ex["request_id"], "settle", f"settle_{ex['settle_reason']}", s,
                        example=ex))) for ex in leaving]
    rejected = [send for send in sends if send[0].endswith("rejected-examples")]
    assert rejected == expected
    # (their settled example and its live scorecard record both stay out)
    left_ids = {ex["request_id"].encode() for ex in leaving}
    assert [send for send in sends if send not in rejected] == [
        send for send in sends_all if send[1] not in left_ids]
    assert any(t.endswith("scorecard") for t, _, _ in sends)
    assert sum(n for (metric, labels), n in tally.counts.items()
               if labels[0] == "settle" and labels[1].startswith("settle_")) == len(leaving)
    assert len(tally.left_at_ms) == len(leaving)
