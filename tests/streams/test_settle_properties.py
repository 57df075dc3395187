"""Property tests for the settle state machine.

1. Tracking a region equals editing the whole file and slicing it at boundaries computed
   independently here by the anchor rules (and context loss happens exactly when predicted).
2. Rebuilding a machine from a copy of its store at any point changes nothing.
3. Long, partly garbled event streams never raise, and errors never touch the store.
4. Same input, same output; idle ticks (live) give the same records as a full-speed replay.

Streams for 2-4 come from a seeded generator (thousands of events are cheap that way);
hypothesis picks the seeds and sizes.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from streams.settle import ERRORS, Applied, SettleMachine, settle_events
from tests.streams.test_settle import edit, pred

ALPHABET = "ab \n=é日本😀"
QUIET = 3_000
TTL = 8_000


def fast(max_examples: int) -> settings:
    """CI runs on 2 cores: few examples, no per-example deadline."""
    return settings(
        max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )


def _nbytes(text: str) -> int:
    return len(text.encode())


def _anchor(p: int, a: int, b: int, length: int, end: bool) -> int:
    """The contract's anchor rule, written independently of streams.settle._move."""
    if a < p < b:
        return a + length if end else a
    if p > a or (p == a and b == a and end) or (p == b and b > a):
        return p + length - (b - a)
    return p


# ---- 1. tracking == whole-file model -------------------------------------------------------------

texts = st.text(alphabet=ALPHABET, max_size=4)


@fast(300)
@given(
    data=st.data(),
    before=st.text(alphabet=ALPHABET, max_size=8),
    excerpt=st.text(alphabet=ALPHABET, max_size=24),
    after=st.text(alphabet=ALPHABET, max_size=8),
    n_edits=st.integers(0, 12),
)
def test_tracked_region_equals_whole_file_sliced(
    data: st.DataObject, before: str, excerpt: str, after: str, n_edits: int
) -> None:
    file = before + excerpt + after
    i, j = len(before), len(before) + len(excerpt)
    p, q = sorted(data.draw(st.lists(st.integers(i, j), min_size=2, max_size=2)))
    start = _nbytes(before)
    lo, hi = _nbytes(file[i:p]), _nbytes(file[i:q])
    events = [pred(excerpt=excerpt, start=start, rng=(lo, hi))]
    r0, r1 = start + lo, start + hi  # region, by the anchor rules
    w0, w1 = start, start + _nbytes(excerpt)  # the excerpt window, exact while `exact`
    exact, expect_lost, touching = True, False, 0
    text = file
    for ts in range(1, n_edits + 1):
        # edit positions (in chars): near the region, near an edge of the excerpt, or anywhere
        chars = len(text)
        raw = text.encode()
        c0, c1 = len(raw[:r0].decode()), len(raw[:r1].decode())
        mode = data.draw(st.sampled_from(["region", "region", "edge", "anywhere"]))
        if mode == "region":
            a = data.draw(st.integers(max(0, c0 - 2), min(chars, c1 + 2)))
        elif mode == "edge" and exact:
            edge = len(raw[: data.draw(st.sampled_from([w0, w1]))].decode())
            a = data.draw(st.integers(max(0, edge - 4), min(chars, edge + 1)))
        else:
            a = data.draw(st.integers(0, chars))
        b = data.draw(st.integers(a, min(chars, a + data.draw(st.sampled_from([0, 1, 3, 8])))))
        new = data.draw(texts)
        ba, bb, blen = _nbytes(text[:a]), _nbytes(text[:b]), _nbytes(new)
        events.append(edit(ts, ba, bb, new))
        touches = ba <= r1 and bb >= r0
        inside = w0 <= ba and bb <= w1
        if exact and touches and not inside:
            expect_lost = True
            break
        if not inside and bb > w0 and ba < w1:
            exact = False  # the known window shrank: the machine knows less than the file
        touching += touches
        r0, r1 = _anchor(r0, ba, bb, blen, False), _anchor(r1, ba, bb, blen, True)
        w0, w1 = _anchor(w0, ba, bb, blen, False), _anchor(w1, ba, bb, blen, True)
        text = text[:a] + new + text[b:]
    [rec] = settle_events(events, quiescence_ms=10_000)
    note(f"{events=}\n{rec=}")
    event(f"{rec['settle_reason']}, exact={exact}, touched={min(touching, 3)}")
    if expect_lost:
        assert rec["settle_reason"] == "context_lost"
        return
    if exact:
        assert rec["settle_reason"] == "quiescence"
    if rec["settle_reason"] == "context_lost":
        return  # only possible once the known window shrank below what the file model knows
    assert rec["settled_region"] == text.encode()[r0:r1].decode()
    assert rec["touching_edits"] == touching


# ---- stream generator for 2-4 ------------------------------------------------------------------

JUNK: list[Any] = [None, -1, True, "x", 2**70, [], {}, "\ud800", 1.5, [1, 2, 3], "",
                   float("nan"), (1, 2), {3: 4}]  # fmt: skip


def _text(rnd: random.Random, size: int) -> str:
    return "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(0, size)))


STEPS = [0, 1, 50, 500, 1_500, 2_999, 3_000, 4_000, 25_000]
STEP_WEIGHTS = [3, 3, 10, 10, 4, 1, 1, 1, 0.3]


def gen_stream(
    seed: int, n: int, *, garbage: float = 0.0, late: float = 0.05, ticks: bool = True
) -> list[dict[str, Any]]:
    """A partition's worth of mostly valid events: bursts of typing in a few files, with
    predictions, client settles (some before their prediction), outcomes and idle ticks."""
    rnd = random.Random(seed)
    files: dict[tuple[str, str], str] = {}
    focus: dict[tuple[str, str], int] = {}  # char position of the latest prediction
    rids: list[str] = []
    ts = 0
    where = ("s1", "a.py")
    out: list[dict[str, Any]] = []
    for k in range(n):
        ts += rnd.choices(STEPS, STEP_WEIGHTS)[0]
        ev_ts = max(0, ts - rnd.randint(0, 6_000)) if rnd.random() < late else ts
        if rnd.random() < 0.15:
            where = (rnd.choice(["s1", "s2"]), rnd.choice(["a.py", "b.py"]))
        sid, path = where
        text = files.setdefault(where, _text(rnd, 40))
        kind = rnd.random()
        if kind < 0.5:
            if rnd.random() < 0.7:  # keep typing around the latest prediction
                a = min(len(text), max(0, focus.get(where, 0) + rnd.randint(-2, 4)))
            else:
                a = rnd.randint(0, len(text))
            b = min(len(text), a + rnd.choice([0, 0, 1, 2, 6]))
            new = _text(rnd, 3)
            ev = edit(ev_ts, _nbytes(text[:a]), _nbytes(text[:b]), new, sid=sid, path=path)
            files[where] = text[:a] + new + text[b:]
        elif kind < 0.72:
            i, p, q, j = sorted(rnd.randint(0, len(text)) for _ in range(4))
            focus[where] = p
            rid = rnd.choice(rids) if rids and rnd.random() < 0.15 else f"r{k}"
            rids.append(rid)
            ev = pred(
                rid,
                ev_ts,
                excerpt=text[i:j],
                start=_nbytes(text[:i]),
                rng=(_nbytes(text[i:p]), _nbytes(text[i:q])),
                sid=sid,
                path=path,
            )
        elif kind < 0.8:
            # settled for a known request, or for one whose prediction comes later (orphan)
            rid = rnd.choice(rids) if rids and rnd.random() < 0.7 else f"r{k + rnd.randint(1, 9)}"
            ev = {"v": 1, "type": "settled", "session_id": sid, "ts_ms": ev_ts,
                  "can_collect_data": True, "request_id": rid,
                  "settled_region": _text(rnd, 5)}  # fmt: skip
        elif kind < 0.9:
            rid = rnd.choice(rids) if rids else "r0"
            ev = {"v": 1, "type": "outcome", "session_id": sid, "ts_ms": ev_ts,
                  "can_collect_data": True, "request_id": rid,
                  "outcome": rnd.choice(["accepted", "rejected", "discarded", "ignored"]),
                  "was_shown": rnd.random() < 0.5}  # fmt: skip
        elif ticks:
            # idle time passes; editors' clocks follow it
            ts += rnd.choice([0, 100, 1_000, 3_000, 30_000])
            ev = {"v": 1, "type": "control", "session_id": "w", "ts_ms": ts,
                  "can_collect_data": False, "op": "tick", "watermark_ms": ts}  # fmt: skip
        else:
            continue
        if rnd.random() < garbage:
            ev = _garble(rnd, ev)
        out.append(ev)
    return out


def _garble(rnd: random.Random, ev: dict[str, Any]) -> dict[str, Any]:
    ev = dict(ev)
    how = rnd.randint(0, 5)
    key = rnd.choice(sorted(ev))
    if how == 0:
        ev[key] = rnd.choice(JUNK)
    elif how == 1:
        del ev[key]
    elif how == 2:
        ev["type"] = rnd.choice(["prediction", "edit", "settled", "outcome", "control", "?"])
    elif how == 3:
        for k in ("start", "end", "cursor", "excerpt_start", "ts_ms", "watermark_ms"):
            if k in ev:
                ev[k] = rnd.choice([0, 1, 3, 7, 10**6, -5])
    elif how == 4:
        ev["editable_range"] = rnd.choice([[5, 1], [0, 10**6], [1, 2, 3], [0, 0], "01"])
    else:
        ev["op"] = rnd.choice(["tick", "flush", "nope"])
    return ev


class SnapshotStore(dict[str, Any]):
    """A dict that checks what a changelog-backed table needs: JSON values, no in-place edits."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.snapshots = {k: json.dumps(v) for k, v in self.items()}
        self.writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        assert isinstance(key, str)
        _assert_json_only(value)
        super().__setitem__(key, value)
        self.snapshots[key] = json.dumps(value)
        self.writes += 1

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        del self.snapshots[key]
        self.writes += 1

    def check_untouched_values(self) -> None:
        for key, value in self.items():
            assert json.dumps(value) == self.snapshots[key], f"{key} was mutated in place"


def _assert_json_only(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str)
            _assert_json_only(v)
    elif isinstance(value, list):
        for v in value:
            _assert_json_only(v)
    else:
        # finite floats only from carried-along prediction fields; they round-trip exactly
        finite = isinstance(value, float) and math.isfinite(value)
        assert value is None or isinstance(value, str | int) or finite, type(value)


def _as_json(results: list[Applied]) -> str:
    """Byte-exact rendering of a run's output (key order included)."""
    return json.dumps([[r.settled, r.expired, r.error] for r in results], ensure_ascii=False)


def _run(events: list[dict[str, Any]], store: dict[str, Any] | None = None) -> list[Applied]:
    m = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, store=store)
    return [m.apply(e) for e in events] + [m.flush()]


# ---- 2. restart from a copied store --------------------------------------------------------


@fast(40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 60), garbage=st.sampled_from([0, 0.1]))
def test_restart_at_any_point_gives_identical_output(seed: int, n: int, garbage: float) -> None:
    events = gen_stream(seed, n, garbage=garbage)
    whole = _as_json(_run(events))
    for cut in range(len(events) + 1):
        store: dict[str, Any] = {}
        m = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, store=store)
        head = [m.apply(e) for e in events[:cut]]
        m.due_ms()  # lazily fixes the in-memory heap; must not matter
        # the copy goes through JSON, as a changelog would
        copied = json.loads(json.dumps(store))
        tail = _run(events[cut:], copied)
        assert _as_json(head + tail) == whole, f"restart after event {cut}"


# ---- 3. garbage never raises --------------------------------------------------------------------


@fast(6)
@given(seed=st.integers(0, 2**32 - 1), garbage=st.sampled_from([0.02, 0.3]))
def test_long_garbled_streams_never_raise_and_errors_have_no_effect(
    seed: int, garbage: float
) -> None:
    events = gen_stream(seed, 10_000, garbage=garbage, late=0.1)  # each stream ≥ 10 000 events
    assert len(events) >= 10_000
    store = SnapshotStore()
    m = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL, store=store)
    settled = 0
    for ev in events:
        before = store.writes
        res = m.apply(ev)
        if res.error is not None:
            assert res.error in ERRORS
            assert store.writes == before and res.settled == res.expired == []
        settled += len(res.settled)
        wm, due = m.watermark_ms, m.due_ms()
        # nothing open or waiting is due at or before event time
        assert due is None or wm is None or due > wm
    settled += len(m.flush().settled)
    assert m.open_count == 0 and m.due_ms() is None
    assert set(store) <= {"m:watermark"}
    store.check_untouched_values()
    assert settled > 0


def test_garbage_run_hits_many_rules() -> None:
    """Guards the generator itself: the random streams must exercise every settle reason."""
    reasons: set[str] = set()
    errors: set[str | None] = set()
    for seed in range(4):
        for res in _run(gen_stream(seed, 1_500, garbage=0.2)):
            reasons |= {r["settle_reason"] for r in res.settled}
            errors.add(res.error)
    assert reasons == {"quiescence", "ttl", "client", "context_lost"}
    assert len(errors) >= 8


# ---- 4. determinism, live == replay --------------------------------------------------------


def _with_idle_ticks(events: list[dict[str, Any]], seed: int) -> Iterator[dict[str, Any]]:
    """Interleave the ticks a live worker might send while waiting for each event.

    A tick never passes the watermark the replay reaches with the next event (an event that
    errors does not move it): an idle tick beyond that would see the future, and then no
    worker could match a replay (late events would find entries already settled).
    """
    rnd = random.Random(seed)
    replay = SettleMachine(quiescence_ms=QUIET, ttl_ms=TTL)
    for ev in events:
        low = replay.watermark_ms
        replay.apply(ev)
        high = replay.watermark_ms
        if high is not None:
            for _ in range(rnd.randint(0, 2)):
                low = rnd.randint(high if low is None else low, high)
                yield {"type": "control", "op": "tick", "watermark_ms": low}
        yield ev


@fast(40)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300))
def test_same_input_same_output_live_or_replayed(seed: int, n: int) -> None:
    events = gen_stream(seed, n, ticks=False)
    replay = _run(events)
    again = _run(json.loads(json.dumps(events)))
    assert _as_json(replay) == _as_json(again)
    live = _run(list(_with_idle_ticks(events, seed)))
    settled = [r for res in replay for r in res.settled]
    assert json.dumps([r for res in live for r in res.settled]) == json.dumps(settled)
    expired = [r for res in replay for r in res.expired]
    assert json.dumps([r for res in live for r in res.expired]) == json.dumps(expired)
    # the offline entry point agrees with the machine
    offline = settle_events(events, quiescence_ms=QUIET, ttl_ms=TTL)
    assert json.dumps(offline) == json.dumps(settled)
