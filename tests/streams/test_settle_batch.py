"""The settle runner's pure batch path: staged writes, coalescing, the applied-offset skip and
the changelog encoding (streams.settle: StagedStore, apply_batch, changelog_records, Restored).

No Kafka here: a "changelog" is the list of (key, value) records a batch would send, and a
restart is a `Restored` built from them.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from streams.settle import (
    WATERMARK_KEY,
    Restored,
    SettleMachine,
    StagedStore,
    apply_batch,
    changelog_records,
)
from tests.streams.test_settle_properties import QUIET, TTL, gen_stream

# --------------------------------------------------------------------------- StagedStore


def test_writes_are_staged_until_landed_and_reads_see_them() -> None:
    base = {"a": 1, "b": 2}
    store = StagedStore(base)
    store["c"] = 3
    del store["a"]
    store["b"] = 20
    assert base == {"a": 1, "b": 2}  # nothing landed yet
    assert dict(store) == {"b": 20, "c": 3}
    assert "a" not in store and store.get("a") is None and store.get("a", 7) == 7
    assert store["b"] == 20 and len(store) == 2
    with pytest.raises(KeyError):
        store["a"]
    with pytest.raises(KeyError):
        del store["a"]
    assert store.writes() == {"a": None, "b": 20, "c": 3}
    store.land()
    assert base == {"b": 20, "c": 3}
    assert store.writes() == {} and not store.pending


def test_writes_coalesce_per_key_last_value_wins() -> None:
    store = StagedStore({"x": 0, "gone": 1})
    for i in range(5):
        store["x"] = i
    store["new"] = 1
    del store["new"]  # created and deleted in one batch: nothing to write
    store["gone"] = 2
    del store["gone"]  # existed before: a tombstone
    store["back"] = 1
    del store["back"]
    store["back"] = 2  # deleted then written again: the value
    assert store.writes() == {"x": 4, "gone": None, "back": 2}


def test_discard_forgets_the_staged_writes() -> None:
    base = {"a": 1}
    store = StagedStore(base)
    store["a"] = 2
    store["b"] = 3
    store.discard()
    assert dict(store) == {"a": 1} and base == {"a": 1} and store.writes() == {}


# --------------------------------------------------------------------------- apply_batch


def _out(result: Any) -> bytes:
    return orjson.dumps([result.settled, result.expired, result.error])


def _batches(n: int, rng: random.Random) -> list[range]:
    out, i = [], 0
    while i < n:
        size = rng.choice((1, 2, 5, 17, 60, 200))
        out.append(range(i, min(n, i + size)))
        i += size
    return out


class Partition:
    """What the runner does for one partition, without Kafka: apply a batch, "send" its
    changelog records (kept in `log`), land."""

    def __init__(self, restored: Restored | None = None) -> None:
        restored = restored or Restored()
        self.store = StagedStore(restored.base)
        self.machine = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, store=self.store)
        self.applied = restored.applied
        self.log: list[tuple[bytes, bytes | None]] = []

    def batch(self, events: list[dict[str, Any]], offsets: range) -> list[bytes]:
        outcome = apply_batch(self.machine, self.store,
                              [(o, events[o]) for o in offsets], self.applied)
        self.log.extend(changelog_records(
            0, outcome.writes, outcome.applied if outcome.applied != self.applied else None))
        self.store.land()
        self.applied = outcome.applied
        return [_out(ev.applied) for ev in outcome.events]


def _restore(log: list[tuple[bytes, bytes | None]]) -> Restored:
    restored = Restored()
    for key, value in log:
        restored.add(0, key, value)
    return restored


def test_batches_give_the_outputs_and_state_of_one_event_at_a_time() -> None:
    events = gen_stream(11, 600, garbage=0.05)
    single = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL)
    clean = [_out(single.apply(ev)) for ev in events]
    part = Partition()
    got: list[bytes] = []
    for offsets in _batches(len(events), random.Random(2)):
        got += part.batch(events, offsets)
    assert got == clean
    assert part.store.base == single._store
    # the changelog, replayed, is exactly that state
    assert _restore(part.log).base == single._store
    assert _restore(part.log).applied == len(events) - 1


def test_a_batch_writes_each_key_once() -> None:
    events = [ev for ev in gen_stream(3, 400) if ev["type"] != "control"]
    part = Partition()
    part.batch(events, range(len(events)))
    keys = [k for k, _ in part.log]
    assert len(keys) == len(set(keys))
    assert keys.count(orjson.dumps(f"0|{WATERMARK_KEY}")) == 1  # not once per event
    assert keys[-1] == b'"0#applied"'
    one_by_one = Partition()
    for o in range(len(events)):
        one_by_one.batch(events, range(o, o + 1))
    assert len(part.log) < len(one_by_one.log) / 3


def test_replay_after_a_lost_offset_commit_skips_what_was_applied() -> None:
    """Crash after the changelog of batches up to offset k was written but with the consumer
    offset at j <= k: the restarted partition sees j.. again. The applied offset skips up to
    k, so outputs and state equal an uncrashed run's."""
    events = gen_stream(7, 400, garbage=0.05)
    clean = Partition()
    clean_out: list[bytes] = []
    for offsets in _batches(len(events), random.Random(0)):
        clean_out += clean.batch(events, offsets)
    rng = random.Random(1)
    for _ in range(20):
        first = Partition()
        k = rng.randrange(len(events))
        for offsets in _batches(k + 1, rng):
            first.batch(events, offsets)
        j = rng.randrange(k + 1)
        again = Partition(_restore(first.log))
        out: list[bytes] = []
        for offsets in _batches(len(events) - j, rng):
            out += again.batch(events, range(offsets.start + j, offsets.stop + j))
        assert out == clean_out[k + 1:]
        assert again.store.base == clean.store.base
        assert again.applied == len(events) - 1


def test_replayed_outputs_equal_the_uncrashed_runs_tail() -> None:
    events = gen_stream(9, 300, garbage=0.05)
    clean = Partition()
    clean_out = clean.batch(events, range(len(events)))
    first = Partition()
    first.batch(events, range(0, 120))
    again = Partition(_restore(first.log))
    out = again.batch(events, range(80, 200)) + again.batch(events, range(200, 300))
    assert out == clean_out[120:]


def test_without_the_applied_offset_a_replay_applies_edits_twice() -> None:
    """Guards the skip: the same replay with the applied offset forgotten differs."""
    events = gen_stream(7, 400, garbage=0.0)
    clean_out = Partition().batch(events, range(len(events)))
    differs = 0
    for k in range(50, 400, 50):
        first = Partition()
        first.batch(events, range(k + 1))
        restored = _restore(first.log)
        restored.applied = None
        again = Partition(restored)
        differs += again.batch(events, range(k - 40, len(events)))[41:] != clean_out[k + 1:]
    assert differs > 0


def test_rejected_records_move_the_applied_offset_and_change_nothing() -> None:
    events = gen_stream(5, 50)
    part = Partition()
    part.batch(events, range(10))
    before = dict(part.store.base)
    outcome = apply_batch(part.machine, part.store, [(10, None), (11, None)], part.applied)
    assert outcome.events == [] and outcome.applied == 11 and outcome.writes == {}
    assert part.store.base == before
    again = apply_batch(part.machine, part.store, [(11, None), (12, None)], 11)
    assert again.skipped == 1 and again.applied == 12


def test_a_discarded_batch_leaves_the_landed_state_for_a_rebuilt_machine() -> None:
    events = gen_stream(13, 300, garbage=0.02)
    clean = Partition()
    clean_out = clean.batch(events, range(len(events)))
    part = Partition()
    part.batch(events, range(150))
    apply_batch(part.machine, part.store, [(o, events[o]) for o in range(150, 250)],
                part.applied)
    part.store.discard()  # the batch's transaction failed
    part.machine = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, store=part.store)
    assert part.batch(events, range(150, 300)) == clean_out[150:]
    assert part.store.base == clean.store.base


def test_an_exception_in_the_machine_is_one_events_dead_letter() -> None:
    class Boom(SettleMachine):
        def apply(self, event: dict[str, Any]) -> Any:
            if event.get("boom"):
                raise ZeroDivisionError
            return super().apply(event)

    store = StagedStore()
    m = Boom(quiescence_ms=QUIET, ttl_ms=TTL, store=store)
    evs = [{"v": 1, "type": "control", "op": "tick", "watermark_ms": 5, "session_id": "c",
            "ts_ms": 5}, {"boom": True, "type": "edit"}]
    outcome = apply_batch(m, store, list(enumerate(evs)), None)
    assert [e.crash for e in outcome.events] == [None, "ZeroDivisionError"]
    assert outcome.events[1].applied is None and outcome.applied == 1
    assert outcome.anchor_ms == 5  # the last non-control event's watermark


def test_changelog_encoding_is_the_faust_tables() -> None:
    recs = changelog_records(3, {"s:r1": {"a": 1}, "k:r1": None}, 41)
    assert recs == [(b'"3|s:r1"', b'{"a":1}'), (b'"3|k:r1"', None), (b'"3#applied"', b"41")]
    restored = Restored()
    for key, value in [(b'"3|k:r1"', b'"text"'), *recs, (b'"4|s:x"', b"1")]:
        restored.add(3, key, value)
    assert restored.base == {"s:r1": {"a": 1}} and restored.applied == 41
