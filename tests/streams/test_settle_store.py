"""The settle agent's staged store: state lands after outputs, with the event's offset.

The table here is a plain dict standing in for the slice of faust's Table API the store uses
(`data`, item assignment and deletion); the properties are about the staging, not Kafka.
"""

from __future__ import annotations

import random
from typing import Any

import orjson

from agents.settle import PartitionStore
from streams.settle import SettleMachine
from tests.streams.test_settle_properties import QUIET, TTL, gen_stream


class DictTable(dict[str, Any]):
    """`data` is the table itself, as in faust where the Table's `.data` is its store."""

    @property
    def data(self) -> dict[str, Any]:
        return self


def test_writes_are_staged_until_landed_and_reads_see_them() -> None:
    table = DictTable({"0|a": 1, "0|b": 2, "1|a": 9})
    store = PartitionStore(table, 0)
    store["c"] = 3
    del store["a"]
    store["b"] = 20
    assert dict(table) == {"0|a": 1, "0|b": 2, "1|a": 9}  # nothing landed yet
    assert dict(store) == {"b": 20, "c": 3}
    assert "a" not in store and len(store) == 2
    assert store.applied_offset is None
    writes = store.land(41)
    assert dict(table) == {"0|b": 20, "0|c": 3, "1|a": 9, "0#applied": 41}
    # the changelog writes that reproduce it on recovery: sets, deletes (None), the offset last
    assert sorted(writes[:-1]) == [("0|a", None), ("0|b", 20), ("0|c", 3)]
    assert writes[-1] == ("0#applied", 41)
    assert dict(store) == {"b": 20, "c": 3}  # the applied offset is not part of the view
    assert store.applied_offset == 41


def test_delete_of_a_key_only_staged_never_reaches_the_table() -> None:
    table = DictTable()
    store = PartitionStore(table, 3)
    store["x"] = 1
    del store["x"]
    store.land(0)
    assert dict(table) == {"3#applied": 0}


def _outputs(machine: SettleMachine, event: dict[str, Any]) -> bytes:
    res = machine.apply(event)
    return orjson.dumps([res.settled, res.expired, res.error])


def _landed(events: list[dict[str, Any]], upto: int) -> tuple[DictTable, list[bytes]]:
    """Handle events[0..upto] with landing after each; the table and each event's outputs."""
    table = DictTable()
    store = PartitionStore(table, 0)
    m = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, store=store)
    out = []
    for offset in range(upto + 1):
        out.append(_outputs(m, events[offset]))
        store.land(offset)
    return table, out


def test_crash_between_landing_and_commit_replays_without_double_application() -> None:
    """A crash after state landed for events up to k, but with the committed offset at
    j < k: the restarted worker sees events j..k again. Skipping those at or below the landed
    offset gives the uncrashed run's outputs and final state, for any j <= k."""
    events = gen_stream(7, 400, garbage=0.05)
    clean_table, clean_out = _landed(events, len(events) - 1)
    rng = random.Random(1)
    for _ in range(20):
        k = rng.randrange(len(events))
        j = rng.randrange(k + 1)
        table, _ = _landed(events, k)
        # crash: a new machine over the recovered table, consuming again from j
        store = PartitionStore(table, 0)
        m = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, store=store)
        replayed_out = []
        for offset in range(j, len(events)):
            applied = store.applied_offset
            if applied is not None and offset <= applied:
                continue
            replayed_out.append(_outputs(m, events[offset]))
            store.land(offset)
        assert replayed_out == clean_out[k + 1:]
        assert dict(table) == dict(clean_table)


def test_without_the_offset_check_a_replay_applies_edits_twice() -> None:
    """Guards the test above: replaying already-landed events does change the outcome."""
    events = gen_stream(7, 400, garbage=0.0)
    _, clean = _landed(events, len(events) - 1)
    differs = 0
    for k in range(50, 400, 50):
        table, _ = _landed(events, k)
        m = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, store=PartitionStore(table, 0))
        again = [_outputs(m, events[o]) for o in range(k - 40, len(events))]
        differs += again[41:] != clean[k + 1:]
    assert differs > 0


def test_drop_partitions_forgets_only_their_keys() -> None:
    from agents.settle import drop_partitions

    table = DictTable({"0|s:a": 1, "0#applied": 5, "1|s:b": 2, "1#applied": 7, "10|s:c": 3})
    assert drop_partitions(table, {1}) == 2  # type: ignore[arg-type]
    assert dict(table) == {"0|s:a": 1, "0#applied": 5, "10|s:c": 3}
