"""Privacy follows the prediction: what ingest discarded, the settle stage remembers.

A prediction discarded at ingest (no consent, closed source, a credential) leaves its later
`settled` and `outcome` events behind; they must be discarded and counted like it, not
dead-lettered with their bytes. An edit discarded at ingest leaves the open predictions of its
file unable to follow their region; they close without a record.
"""

from __future__ import annotations

from typing import Any

from streams.settle import (
    WATERMARK_KEY,
    Forget,
    Restored,
    SettleMachine,
    StagedStore,
    apply_batch,
    changelog_records,
)
from tests.streams.test_settle import TTL, edit, outcome_ev, pred, settled_ev
from tests.streams.test_settle import Q as QUIET


def machine(**kw: Any) -> SettleMachine:
    return SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, **kw)


def test_later_events_of_a_discarded_prediction_are_discarded_not_unknown() -> None:
    m = machine()
    m.apply(pred("ok", 0))
    m.discard_request("gone")
    out = m.apply(outcome_ev("gone", 50))
    assert (out.error, out.discarded) == (None, "prediction_discarded")
    assert m.apply(settled_ev("gone", 60, "x")).discarded == "prediction_discarded"
    # a request never seen is still an unknown request (it goes to the DLQ)
    assert m.apply(outcome_ev("never", 70)).error == "unknown_request"
    # and nothing of the discarded id is stored in the clear
    assert not any("gone" in k for k in m._store)


def test_a_waiting_client_settled_event_is_dropped_with_its_prediction() -> None:
    m = machine()
    assert m.apply(settled_ev("r9", 10, "secret text")).error is None  # an orphan waits
    m.discard_request("r9")
    # its expiry passes without a dead letter: the orphan is gone, not expired
    assert m.advance(10 + TTL + 1).expired == []


def test_a_discarded_edit_closes_the_open_predictions_of_its_file() -> None:
    m = machine()
    m.apply(pred("a", 0))
    m.apply(pred("b", 1, path="other.py"))
    m.apply(pred("c", 2, sid="s2"))
    out = m.discard_file("s1", "a.py")
    assert out.dropped == ["a"]
    assert m.open_count == 2
    assert m.apply(outcome_ev("a", 5)).discarded == "prediction_discarded"
    settled = m.flush().settled
    assert sorted(r["request_id"] for r in settled) == ["b", "c"]


def test_memory_expires_with_event_time_and_is_bounded() -> None:
    m = machine(privacy_memory=2)
    m.apply(edit(1000, 0, 0, "x"))
    for rid in ("r1", "r2", "r3"):
        m.discard_request(rid)
    # bounded: the first to expire (r1, all equal: by key order) made room for r3
    remembered = [r for r in ("r1", "r2", "r3")
                  if m.apply(outcome_ev(r, 1001)).discarded == "prediction_discarded"]
    assert len(remembered) == 2
    m.advance(1000 + TTL + QUIET)
    assert m.apply(outcome_ev("r2", 1000 + TTL + QUIET + 1)).error == "unknown_request"


def test_batches_remember_across_a_restart_from_the_changelog() -> None:
    base: dict[str, object] = {}
    store = StagedStore(base)
    m = machine(store=store)
    out = apply_batch(m, store, [(0, pred("a", 0)), (1, Forget(request_id="gone")),
                                 (2, Forget(session_id="s1", path="a.py"))], None)
    assert out.dropped == {2: ["a"]}
    log = changelog_records(0, out.writes, out.applied)
    store.land()
    restored = Restored()
    for key, value in log:
        restored.add(0, key, value)
    again = machine(store=StagedStore(restored.base))
    assert again.apply(outcome_ev("gone", 10)).discarded == "prediction_discarded"
    assert again.apply(outcome_ev("a", 10)).discarded == "prediction_discarded"
    assert again.open_count == 0 and WATERMARK_KEY in restored.base
