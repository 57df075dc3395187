"""Unit tests for the settle state machine: one test (or a few) per rule of CONTRACT §2/§3.

The standard prediction has excerpt "0123456789" at file offset 100 with editable range [3, 7),
so the region is file bytes [103, 107) = "3456" and the known window is [100, 110).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import pytest

import schemas
from streams.settle import ERRORS, WATERMARK_KEY, Applied, SettleMachine, settle_events

Q = 10_000
TTL = 300_000


def pred(
    rid: str = "r1",
    ts: int = 0,
    *,
    excerpt: str = "0123456789",
    start: int = 100,
    rng: tuple[int, int] = (3, 7),
    cursor: int | None = None,
    sid: str = "s1",
    path: str = "a.py",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "v": 1,
        "type": "prediction",
        "session_id": sid,
        "ts_ms": ts,
        "can_collect_data": True,
        "request_id": rid,
        "path": path,
        "in_open_source_repo": False,
        "excerpt": excerpt,
        "excerpt_start": start,
        "cursor": rng[0] if cursor is None else cursor,
        "editable_range": list(rng),
        "history": [],
        **extra,
    }


def edit(
    ts: int, a: int, b: int, text: str, *, sid: str = "s1", path: str = "a.py"
) -> dict[str, Any]:
    return {
        "v": 1,
        "type": "edit",
        "session_id": sid,
        "ts_ms": ts,
        "can_collect_data": True,
        "path": path,
        "start": a,
        "end": b,
        "text": text,
        "predicted": False,
    }


def settled_ev(rid: str, ts: int, region: str, *, sid: str = "s1") -> dict[str, Any]:
    return {
        "v": 1,
        "type": "settled",
        "session_id": sid,
        "ts_ms": ts,
        "can_collect_data": True,
        "request_id": rid,
        "settled_region": region,
    }


def outcome_ev(rid: str, ts: int, outcome: str = "accepted", shown: bool = True) -> dict[str, Any]:
    return {
        "v": 1,
        "type": "outcome",
        "session_id": "s1",
        "ts_ms": ts,
        "can_collect_data": True,
        "request_id": rid,
        "outcome": outcome,
        "was_shown": shown,
    }


def control(op: str, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "type": "control", "session_id": "w", "ts_ms": 0, "can_collect_data": False,
            "op": op, **fields}  # fmt: skip


def only(events: Iterable[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    out = settle_events(events, **kw)
    assert len(out) == 1, out
    return out[0]


def apply_all(m: SettleMachine, events: Iterable[dict[str, Any]]) -> list[Applied]:
    results = [m.apply(e) for e in events]
    assert [r.error for r in results] == [None] * len(results)
    return results


# ---- anchors and touching ------------------------------------------------------------------


def test_untouched_region_settles_by_quiescence_with_base_text() -> None:
    rec = only([pred()])
    assert rec["settle_reason"] == "quiescence"
    assert rec["settled_at_ms"] == Q
    assert rec["base_region"] == rec["settled_region"] == "3456"
    assert rec["touching_edits"] == 0


def test_insertion_at_end_boundary_counts_inside() -> None:
    rec = only([pred(), edit(5, 107, 107, "X")])
    assert rec["settled_region"] == "3456X"
    assert rec["touching_edits"] == 1
    assert rec["settled_at_ms"] == 5 + Q  # touching: last_touch moved


def test_insertion_at_start_boundary_touches_and_lands_inside() -> None:
    rec = only([pred(), edit(5, 103, 103, "X")])
    assert rec["settled_region"] == "X3456"
    assert rec["touching_edits"] == 1
    assert rec["settled_at_ms"] == 5 + Q


def test_edit_ending_at_region_start_touches_but_stays_outside() -> None:
    # [101, 103) -> "ab": start boundary (== b) shifts by delta 0, text unchanged, but touches
    rec = only([pred(), edit(5, 101, 103, "abc")])
    assert rec["settled_region"] == "3456"
    assert rec["touching_edits"] == 1


def test_edit_starting_at_region_end_touches_but_stays_outside() -> None:
    rec = only([pred(), edit(5, 107, 109, "")])
    assert rec["settled_region"] == "3456"
    assert rec["touching_edits"] == 1


def test_edit_straddling_start_snaps_start_to_edit_start() -> None:
    # replaces "234" at [102, 105): start (103) is strictly inside -> moves to a
    rec = only([pred(), edit(5, 102, 105, "XY")])
    assert rec["settled_region"] == "XY56"


def test_edit_straddling_end_snaps_end_after_inserted_text() -> None:
    # replaces "678" at [106, 109): end (107) strictly inside -> a + L
    rec = only([pred(), edit(5, 106, 109, "XY")])
    assert rec["settled_region"] == "345XY"


def test_edit_covering_region_makes_region_the_replacement() -> None:
    rec = only([pred(), edit(5, 102, 108, "new")])
    assert rec["settled_region"] == "new"


def test_edits_inside_region_compose_in_order() -> None:
    rec = only([pred(), edit(1, 104, 106, "AB"), edit(2, 107, 107, "!"), edit(3, 103, 104, "")])
    assert rec["settled_region"] == "AB6!"
    assert rec["touching_edits"] == 3


def test_non_touching_edit_before_region_only_shifts() -> None:
    events = [pred(), edit(5, 100, 101, "xyz"), edit(6, 107, 107, "!")]  # region: [105, 109)
    rec = only(events)
    assert rec["settled_region"] == "34!56"
    assert rec["touching_edits"] == 1
    assert rec["settled_at_ms"] == 6 + Q


def test_non_touching_edit_does_not_delay_quiescence() -> None:
    rec = only([pred(), edit(5_000, 0, 0, "far above"), edit(9_000, 109, 110, "")])
    assert rec["touching_edits"] == 0
    assert rec["settled_at_ms"] == Q


def test_edits_of_other_paths_and_sessions_are_ignored() -> None:
    rec = only([pred(), edit(5, 104, 105, "X", path="b.py"), edit(6, 104, 105, "X", sid="s2")])
    assert rec["settled_region"] == "3456"
    assert rec["touching_edits"] == 0
    assert rec["settled_at_ms"] == Q


# ---- known window and context loss -----------------------------------------------------------


def test_touching_edit_reaching_outside_excerpt_loses_context() -> None:
    m = SettleMachine()
    apply_all(m, [pred(), edit(5, 104, 105, "X")])
    res = m.apply(edit(7, 95, 104, "gone"))
    assert res.error is None
    [rec] = res.settled
    assert rec["settle_reason"] == "context_lost"
    assert rec["settled_at_ms"] == 7
    assert rec["settled_region"] == "3X56"  # as known before the losing edit
    assert rec["touching_edits"] == 1
    assert m.open_count == 0


def test_context_lost_at_excerpt_end() -> None:
    rec = only([pred(), edit(7, 106, 111, "")])
    assert rec["settle_reason"] == "context_lost"


def test_insertion_at_excerpt_edges_stays_known() -> None:
    # a region covering the whole excerpt: insertions at its edges are inside the known text
    events = [pred(rng=(0, 10)), edit(1, 100, 100, "<"), edit(2, 111, 111, ">")]
    rec = only(events)
    assert rec["settle_reason"] == "quiescence"
    assert rec["settled_region"] == "<0123456789>"


def test_partial_overlap_outside_region_shrinks_known_window() -> None:
    # [98, 101) -> "hello": the excerpt's "0" is unknown now; K = "123456789" at [103, 112)
    # and the region moves to [105, 109). Deleting [103, 106) = "123" is inside K and touches.
    events = [pred(), edit(1, 98, 101, "hello"), edit(2, 103, 106, "")]
    rec = only(events)
    assert rec["settle_reason"] == "quiescence"
    assert rec["settled_region"] == "456"
    # an edit reaching into the now-unknown byte right before "1" loses the context
    events = [pred(), edit(1, 98, 101, "hello"), edit(2, 102, 106, "")]
    assert only(events)["settle_reason"] == "context_lost"


def test_edit_applied_outside_region_is_seen_by_later_straddling_edit() -> None:
    # change "12" before the region, then delete [101, 105) which straddles the start
    events = [pred(), edit(1, 101, 103, "ab"), edit(2, 101, 105, "")]
    rec = only(events)
    assert rec["settled_region"] == "56"


# ---- event time ------------------------------------------------------------------------------


def test_edit_stamped_exactly_at_due_time_is_not_part_of_entry() -> None:
    rec = only([pred(), edit(Q, 104, 105, "X")])
    assert rec["settled_region"] == "3456"
    assert rec["settled_at_ms"] == Q
    rec = only([pred(), edit(Q - 1, 104, 105, "X")])
    assert rec["settled_region"] == "3X56"
    assert rec["settled_at_ms"] == 2 * Q - 1


def test_settles_before_the_event_that_passes_its_due_time() -> None:
    m = SettleMachine()
    apply_all(m, [pred()])
    res = m.apply(edit(Q, 0, 0, "x", path="other.py"))
    assert [r["request_id"] for r in res.settled] == ["r1"]
    assert m.watermark_ms == Q


def test_ttl_caps_an_entry_that_never_goes_quiet() -> None:
    events = [pred()] + [edit(t, 103, 103, "x") for t in range(5_000, TTL, 5_000)]
    rec = only(events)
    assert rec["settle_reason"] == "ttl"
    assert rec["settled_at_ms"] == TTL
    assert rec["touching_edits"] == len(events) - 1


def test_quiescence_wins_a_tie_with_ttl() -> None:
    rec = only([pred(), edit(5_000, 103, 103, "x")], ttl_ms=5_000 + Q)
    assert rec["settle_reason"] == "quiescence"
    assert rec["settled_at_ms"] == 5_000 + Q


def test_small_ttl() -> None:
    rec = only([pred()], ttl_ms=4_000)
    assert (rec["settle_reason"], rec["settled_at_ms"]) == ("ttl", 4_000)


def test_same_advance_settles_by_due_time_then_request_id() -> None:
    m = SettleMachine()
    apply_all(m, [pred("b", 0), pred("a", 0, path="x.py"), pred("c", 0), pred("0", 5)])
    # touches b, c and 0 (late for 0: its last_touch stays 5); a is on another path
    apply_all(m, [edit(1, 103, 103, "!")])
    res = m.advance(10 * Q)
    assert [(r["settled_at_ms"], r["request_id"]) for r in res.settled] == [
        (Q, "a"),
        (Q + 1, "b"),
        (Q + 1, "c"),
        (Q + 5, "0"),
    ]


def test_late_events_still_apply() -> None:
    m = SettleMachine()
    apply_all(m, [pred("r1", 1_000), edit(3_000, 0, 0, "", path="z")])
    # an edit stamped before the watermark still touches; last_touch only grows
    apply_all(m, [edit(2_000, 104, 104, "X")])
    assert m.due_ms() == 2_000 + Q
    apply_all(m, [edit(500, 104, 104, "Y")])
    assert m.due_ms() == 2_000 + Q
    rec = m.flush().settled[0]
    assert rec["settled_region"] == "3YX456"
    assert rec["touching_edits"] == 2


def test_late_prediction_that_is_already_due_settles_in_the_same_call() -> None:
    m = SettleMachine()
    apply_all(m, [edit(50_000, 0, 0, "")])
    res = m.apply(pred("late", 1_000))
    assert [r["settled_at_ms"] for r in res.settled] == [1_000 + Q]
    assert m.open_count == 0


def test_advance_never_goes_backwards_and_due_ms_tracks_entries() -> None:
    m = SettleMachine()
    assert m.watermark_ms is None and m.due_ms() is None
    apply_all(m, [pred("r1", 100)])
    assert m.due_ms() == 100 + Q
    apply_all(m, [edit(200, 104, 104, "x")])
    assert m.due_ms() == 200 + Q
    assert m.advance(50).settled == [] and m.watermark_ms == 200
    assert m.advance(200 + Q - 1).settled == []
    assert m.open_count == 1
    assert [r["request_id"] for r in m.advance(200 + Q).settled] == ["r1"]
    assert m.watermark_ms == 200 + Q and m.due_ms() is None and m.open_count == 0


def test_control_events_dispatch_to_advance_and_flush() -> None:
    m = SettleMachine()
    apply_all(m, [pred("r1", 0), pred("r2", 0, path="b.py"), edit(20, 104, 104, "x")])
    assert m.apply(control("tick", watermark_ms=Q)).settled[0]["request_id"] == "r2"
    assert m.watermark_ms == Q
    res = m.apply(control("flush"))
    assert [r["request_id"] for r in res.settled] == ["r1"]
    assert m.watermark_ms == Q  # flush ends the input; it does not move event time


# ---- client settle, orphans, outcomes ---------------------------------------------------------


def test_client_settled_event_settles_at_once_with_editor_text() -> None:
    m = SettleMachine()
    apply_all(m, [pred(), edit(5, 104, 104, "x")])
    [rec] = m.apply(settled_ev("r1", 8, "client text")).settled
    assert rec["settle_reason"] == "client"
    assert rec["settled_at_ms"] == 8
    assert rec["settled_region"] == "client text"
    assert rec["base_region"] == "3456"
    assert rec["touching_edits"] == 1


def test_orphan_settled_before_prediction_settles_it_on_arrival() -> None:
    m = SettleMachine()
    assert m.apply(settled_ev("r1", 40, "done")).settled == []
    assert m.open_count == 0 and m.due_ms() == 40 + TTL
    [rec] = m.apply(pred("r1", 30)).settled
    assert (rec["settle_reason"], rec["settled_at_ms"], rec["settled_region"]) == (
        "client",
        40,
        "done",
    )
    assert rec["base_region"] == "3456" and rec["touching_edits"] == 0
    assert m.open_count == 0 and m.due_ms() is None
    assert m.flush() == Applied([], [])


def test_orphan_expires_after_ttl_and_prediction_then_opens_normally() -> None:
    m = SettleMachine()
    orphan = settled_ev("r1", 40, "done")
    apply_all(m, [orphan])
    assert m.advance(40 + TTL - 1).expired == []
    res = m.advance(40 + TTL)
    assert res.expired == [orphan] and res.settled == []
    res = m.apply(pred("r1", 40 + TTL))
    assert res.settled == [] and m.open_count == 1


def test_second_orphan_for_same_request_is_rejected() -> None:
    m = SettleMachine()
    apply_all(m, [settled_ev("r1", 40, "a")])
    assert m.apply(settled_ev("r1", 50, "b")).error == "duplicate_settled"


def test_flush_expires_orphans_in_order() -> None:
    m = SettleMachine()
    apply_all(m, [settled_ev("b", 50, "x"), settled_ev("a", 50, "y"), settled_ev("c", 10, "z")])
    res = m.flush()
    assert [e["request_id"] for e in res.expired] == ["c", "a", "b"]
    assert m.due_ms() is None


def test_outcome_is_attached_while_open() -> None:
    m = SettleMachine()
    apply_all(m, [pred(), outcome_ev("r1", 5, "rejected", False), outcome_ev("r1", 6)])
    rec = m.flush().settled[0]
    assert (rec["outcome"], rec["was_shown"]) == ("accepted", True)  # the latest one wins
    assert "outcome" not in only([pred()])


def test_outcome_for_unknown_or_settled_request_is_an_error() -> None:
    m = SettleMachine()
    assert m.apply(outcome_ev("nope", 5)).error == "unknown_request"
    apply_all(m, [pred()])
    res = m.apply(outcome_ev("r1", Q))  # r1 would settle before this outcome applies
    assert res.error == "unknown_request"
    assert m.open_count == 1 and m.watermark_ms == 0  # no effect, watermark not moved


# ---- flush, offline ------------------------------------------------------------------------


def test_flush_settles_everything_in_due_order_with_reasons() -> None:
    events = [pred("x", 0), pred("y", 0, path="b.py")]
    events += [edit(t, 103, 103, ".", path="b.py") for t in range(5_000, TTL, 5_000)]
    out = settle_events(events, ttl_ms=TTL)
    assert [(r["request_id"], r["settle_reason"]) for r in out] == [
        ("x", "quiescence"),
        ("y", "ttl"),
    ]
    assert settle_events([pred()], flush=False) == []


# ---- non-ASCII: byte offsets are not char offsets -------------------------------------------


def test_non_ascii_excerpt_uses_byte_offsets() -> None:
    excerpt = "é=日本;😀!"  # é:2 bytes, 日本: 3+3, 😀: 4
    raw = excerpt.encode()
    lo = raw.index("日".encode())
    hi = raw.index("😀".encode()) + 4
    p = pred(excerpt=excerpt, start=10, rng=(lo, hi), cursor=lo)
    assert only([p])["base_region"] == "日本;😀"
    # insert after 本 (byte offset, not char offset), replace 😀 with 🎉
    at = 10 + raw.index(b";")
    emoji = 10 + raw.index("😀".encode())
    rec = only([p, edit(1, at, at, "語"), edit(2, emoji + 3, emoji + 7, "🎉")])
    assert rec["settled_region"] == "日本語;🎉"


def test_edit_splitting_a_character_is_rejected_without_effect() -> None:
    p = pred(excerpt="aé日b", start=0, rng=(0, 7))
    m = SettleMachine()
    apply_all(m, [p])
    before = copy.deepcopy(dict(m._store))
    for bad in (edit(1, 2, 2, "x"), edit(1, 0, 4, ""), edit(1, 4, 5, "")):
        assert m.apply(bad).error == "offset_splits_character"
        assert dict(m._store) == before
    apply_all(m, [edit(1, 3, 6, "本")])
    assert m.flush().settled[0]["settled_region"] == "aé本b"


def test_partial_overlap_cut_mid_character_widens_unknown_part() -> None:
    # file bytes: a=5, é=6..7, 日=8..10, b=11; region "日b" = [8, 12); K = [5, 12)
    p = pred(excerpt="aé日b", start=5, rng=(3, 7))
    m = SettleMachine()
    # [0, 7) crosses K's start and ends inside "é": K keeps "日b" only, now at [3, 7)
    apply_all(m, [p, edit(1, 0, 7, "ZZ")])
    assert m._store["s:r1"]["k0"] == 3 and m._store["k:r1"] == "日b"
    apply_all(m, [edit(3, 3, 3, "^")])  # insertion at K start = region start: known, touches
    rec = m.flush().settled[0]
    assert rec["settle_reason"] == "quiescence"
    assert rec["settled_region"] == "^日b"
    # a touching edit reaching into the widened unknown part loses the context
    rec = only([p, edit(1, 0, 7, "ZZ"), edit(3, 2, 3, "")])
    assert rec["settle_reason"] == "context_lost"


def test_applied_edit_outside_region_splitting_a_character_is_rejected() -> None:
    m = SettleMachine()
    apply_all(m, [pred(excerpt="aé日b", start=0, rng=(3, 7))])
    assert m.apply(edit(1, 0, 2, "Z")).error == "offset_splits_character"


# ---- validation errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (pred(rng=(7, 3)), "invalid_editable_range"),
        (pred(rng=(3, 11)), "invalid_editable_range"),
        (pred(excerpt="é", rng=(1, 2)), "invalid_editable_range"),
        ({**pred(), "editable_range": [1]}, "invalid_editable_range"),
        (pred(cursor=11), "invalid_cursor"),
        (pred(excerpt="é", rng=(0, 2), cursor=1), "invalid_cursor"),
        (pred(excerpt="\ud800"), "invalid_text"),
        (edit(1, 5, 4, ""), "invalid_edit_range"),
        (edit(1, -1, 4, ""), "invalid_edit_range"),
        (edit(1, 1, 4, "\udfff"), "invalid_text"),
        (settled_ev("r9", 1, "\ud800"), "invalid_text"),
        ({**edit(1, 1, 4, ""), "start": True}, "invalid_event"),
        ({**edit(1, 1, 4, ""), "ts_ms": "1"}, "invalid_event"),
        ({k: v for k, v in pred().items() if k != "excerpt"}, "invalid_event"),
        ({**outcome_ev("r1", 1), "outcome": "maybe"}, "invalid_event"),
        ({**pred(), "v": 2}, "unsupported_version"),
        ({**pred(), "type": "keystroke"}, "unknown_type"),
        (control("rewind"), "unknown_control_op"),
        (control("tick"), "invalid_watermark"),
        ("not a dict", "invalid_event"),
    ],
)
def test_invalid_events_are_errors_without_effect(event: Any, reason: str) -> None:
    m = SettleMachine()
    apply_all(m, [pred("r1", 0)])
    before = copy.deepcopy(dict(m._store))
    res = m.apply(event)
    assert res == Applied([], [], reason)
    assert reason in ERRORS
    assert dict(m._store) == before
    assert m.watermark_ms == 0


def test_duplicate_open_request_id_is_an_error_but_reuse_after_settle_is_not() -> None:
    m = SettleMachine()
    apply_all(m, [pred("r1", 0)])
    assert m.apply(pred("r1", 5)).error == "duplicate_request_id"
    res = m.apply(pred("r1", Q))  # r1 settles first (due == Q), then opens again
    assert res.error is None and len(res.settled) == 1 and m.open_count == 1


# ---- records and store -----------------------------------------------------------------------


def test_record_copies_prediction_fields_and_validates_against_schema() -> None:
    p = pred(repo_url=None, model_version="m1", output="x", extra_field={"k": [1]})
    m = SettleMachine()
    apply_all(m, [p, outcome_ev("r1", 2)])
    rec = m.flush().settled[0]
    expected = {k: v for k, v in p.items() if k != "type"}
    assert {k: rec[k] for k in expected} == expected
    assert "type" not in rec
    assert list(rec)[-7:] == [
        "settle_reason",
        "settled_at_ms",
        "base_region",
        "settled_region",
        "touching_edits",
        "outcome",
        "was_shown",
    ]
    assert schemas.errors("settled-examples", {**rec, "pipeline_version": "t"}) == []
    # records are independent of the caller's event
    p["history"].append("mutated")
    assert rec["history"] == []


def test_store_holds_only_json_values_under_documented_keys() -> None:
    m = SettleMachine()
    apply_all(m, [pred("r1", 0), edit(1, 104, 104, "x"), settled_ev("o1", 2, "t")])
    assert sorted(m._store) == ["k:r1", "m:watermark", "o:o1", "p:r1", "s:r1"]
    assert json.loads(json.dumps(dict(m._store))) == dict(m._store)
    assert m._store[WATERMARK_KEY] == 2
    assert m._store["s:r1"] == {
        "ts": 0,
        "last": 1,
        "n": 1,
        "k0": 100,
        "klen": 11,
        "r0": 103,
        "r1": 108,
    }


def test_rebuild_continues_and_drops_fragments_of_interrupted_calls() -> None:
    store: dict[str, Any] = {}
    m = SettleMachine(store=store)
    apply_all(m, [pred("r1", 0), pred("r2", 1), settled_ev("o1", 2, "t")])
    store["p:ghost"] = {"junk": True}  # an open interrupted before its s: write
    del store["s:r2"]  # a settle interrupted after its s: delete
    m2 = SettleMachine(store=store)
    assert "p:ghost" not in store and "p:r2" not in store and "k:r2" not in store
    assert m2.open_count == 1 and m2.due_ms() == Q
    res = m2.advance(TTL + 2)
    assert [r["request_id"] for r in res.settled] == ["r1"]
    assert [e["request_id"] for e in res.expired] == ["o1"]


def test_negative_config_is_refused() -> None:
    with pytest.raises(ValueError):
        SettleMachine(quiescence_ms=-1)
