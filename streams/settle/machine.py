"""Settle state machine: turn predictions plus the edits that follow them into settled examples.

A ``prediction`` opens a pending entry. Later ``edit`` events of the same session and path move
its editable region like editor anchors and rewrite its text; the entry settles when the region
has been quiet for ``quiescence_ms`` of event time, when it reaches ``ttl_ms``, when the editor
reports a client-side ``settled`` region, or when an edit makes the region's context unknowable
(``context_lost``). The machine is pure and deterministic: it never reads a clock, and the same
events in the same order always give the same records, whether applied live with idle ticks
in between or replayed at full speed. It is used offline (:func:`settle_events`) and by the
worker's settle runner (``agents/settle.py``), which gives each partition's machine a
:class:`StagedStore` and applies whole fetched batches with :func:`apply_batch`.

Tracking. Each entry keeps the excerpt's *known text*: a window K of the file (in UTF-8 byte
offsets) whose bytes are known, starting as the whole excerpt, with the region R inside it.
Every edit fully inside K is applied to the known text (so a later edit straddling the region
sees the right bytes); an edit that overlaps K only partly and does not touch R shrinks K to the
part that is still known; an edit that touches R but is not inside K loses the context.

Store key scheme. All durable state lives in ``store`` as JSON-serialisable values under string
keys; every change is a fresh ``store[key] = value`` (values are never mutated after being
stored: a store that records changes, such as :class:`StagedStore`, only sees ``__setitem__``)
and removal is ``del store[key]``:

- ``m:watermark`` -> int: the partition's event time (absent before the first event).
- ``p:<request_id>`` -> dict: the prediction event as received; written once on open.
- ``k:<request_id>`` -> str: the known text of window K; rewritten only when it changes.
- ``s:<request_id>`` -> dict: the small tracking state, rewritten on each change::

      {"ts": prediction ts_ms, "last": last_touch_ms, "n": touching edits applied,
       "k0": K start (file byte offset), "klen": K length in bytes,
       "r0": region start, "r1": region end (file byte offsets),
       "outcome": str, "was_shown": bool}   # the last two only once an outcome was seen

  ``s:`` marks the entry as open: it is written last when an entry opens and deleted first
  when it settles, so fragments left by an interrupted call are recognised (and dropped) when a
  machine is rebuilt from the store.
- ``o:<request_id>`` -> dict: an orphan client ``settled`` event waiting for its prediction.
- ``x:<digest of request_id>`` -> int: a request discarded for privacy (its prediction, or an
  edit of its file, did not pass ingest), remembered until this event time so that its later
  ``settled`` and ``outcome`` events are discarded too instead of dead-lettered with their
  bytes (privacy follows the prediction). Only a digest is kept; at most ``privacy_memory``
  per partition (the earliest to expire go first).

The due-time heaps and the (session_id, path) index are in-memory only and rebuilt from
``store.items()`` in ``__init__``, so a machine rebuilt on the same store after a restart
continues exactly as the original would have.

Length: this module is one class whose event handlers share the machine's private state and
invariants (the heaps, the index, the store key scheme above); splitting it would spread
one invariant over several files, so it stays whole at ~750 lines.

Why one module of ~750 lines: it is one state machine. Opening, tracking, settling and the
store's key scheme change together (a new settle reason touches the event handlers, the
tracking and the records alike), and every piece reads the same entry layout; the batch
runner, the staged store and the changelog codec, which do not, live beside it in
``streams/settle/``.
"""

from __future__ import annotations

import copy
import hashlib
import heapq
import math
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard

WATERMARK_KEY = "m:watermark"
_P, _S, _K, _O, _X = "p:", "s:", "k:", "o:", "x:"

OUTCOMES = frozenset({"accepted", "rejected", "discarded", "ignored"})
SETTLE_REASONS = ("quiescence", "ttl", "client", "context_lost")

# Every value ``Applied.error`` can take; the event then changed nothing.
ERRORS = (
    "invalid_event",  # not a dict, a needed field missing or mistyped, or a stored event
    # (prediction, orphan settled) holding something other than plain JSON values
    "unsupported_version",  # v != 1
    "unknown_type",  # type is not prediction/edit/settled/outcome/control
    "unknown_control_op",  # control op is not tick/flush
    "invalid_watermark",  # tick without an int watermark_ms
    "invalid_text",  # a text field is not encodable as UTF-8 (lone surrogate)
    "invalid_editable_range",  # prediction range out of the excerpt, reversed, or mid-character
    "invalid_cursor",  # prediction cursor out of the excerpt or mid-character
    "duplicate_request_id",  # prediction for a request_id that is still open
    "invalid_edit_range",  # edit with start > end or a negative offset
    "offset_splits_character",  # an edit applied to known text cuts a multi-byte character
    "unknown_request",  # outcome for a request that is not open
    "duplicate_settled",  # second client settled event for a request that is still an orphan
)

# Fields the machine adds to a settled record; prediction fields of these names are replaced.
_OWN_FIELDS = frozenset(
    {
        "settle_reason",
        "settled_at_ms",
        "base_region",
        "settled_region",
        "touching_edits",
        "outcome",
        "was_shown",
    }
)

Record = dict[str, Any]
_Commit = Callable[[list[Record], list[Record]], None]
_Planner = Callable[["SettleMachine", dict[str, Any], int], "str | _Commit"]


@dataclass(frozen=True)
class Applied:
    """What one call produced; ``error`` set means the call had no effect at all."""

    settled: list[Record]  # settled examples produced by this call, in settle order
    expired: list[Record]  # orphan client settled events whose prediction never came
    error: str | None = None
    # request ids of open predictions closed without a record for privacy (an edit of their
    # file was discarded at ingest, so their region can no longer be followed)
    dropped: list[str] = field(default_factory=list)
    # set when the event itself is discarded because its prediction was (nothing changed)
    discarded: str | None = None


def _failed(reason: str) -> Applied:
    return Applied([], [], reason)


def _is_int(x: object) -> TypeGuard[int]:
    # bool is an int subclass; a JSON true is not an offset or a timestamp
    return isinstance(x, int) and not isinstance(x, bool)


def _plain_json(value: object, depth: int = 0) -> bool:
    """Whether ``value`` survives a JSON changelog round trip unchanged: dict (str keys), list,
    str, int, bool, None, and finite floats (extra prediction fields are carried along and may
    hold them); no tuples, bytes, NaN; bounded nesting."""
    if value is None or isinstance(value, str | int):  # bool is an int
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if depth > 64:
        return False
    if isinstance(value, list):
        return all(_plain_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_json(v, depth + 1) for k, v in value.items())
    return False


def _utf8(text: str) -> bytes | None:
    """UTF-8 bytes of ``text``, or None when it holds a lone surrogate (not representable)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _is_boundary(buf: bytes, i: int) -> bool:
    """Whether byte offset ``i`` lies in ``buf`` and not inside a multi-byte character."""
    return 0 <= i <= len(buf) and (i == len(buf) or (buf[i] & 0xC0) != 0x80)


def _move(p: int, a: int, b: int, length: int, *, end: bool) -> int:
    """Move boundary ``p`` across an edit replacing [a, b) with ``length`` bytes (anchor rules).

    An insertion exactly at an END boundary lands inside the region; everywhere else a boundary
    at the edit's start stays, one at or after its end shifts, one strictly inside snaps to it.
    """
    if p < a:
        return p
    if p == a:
        return p + length if end and a == b else p
    if p >= b:
        return p + length - (b - a)
    return a + length if end else a


@dataclass(frozen=True)
class _Step:
    """The planned effect of one edit on one entry (None fields: unchanged)."""

    lost: bool = False
    state: dict[str, Any] | None = None
    known: str | None = None


class SettleMachine:
    """Pending entries of one partition and the rules that settle them (see module docstring)."""

    def __init__(
        self,
        *,
        quiescence_ms: int = 10_000,
        ttl_ms: int = 300_000,
        store: MutableMapping[str, Any] | None = None,
        privacy_memory: int = 100_000,
    ) -> None:
        if quiescence_ms < 0 or ttl_ms < 0 or privacy_memory < 0:
            raise ValueError("quiescence_ms, ttl_ms and privacy_memory must be >= 0")
        self._q = quiescence_ms
        self._ttl = ttl_ms
        self._memory = privacy_memory
        # (expiry_ms, store key) of the remembered discarded requests (stale items skipped)
        self._forget_heap: list[tuple[int, str]] = []
        self._forgotten = 0
        self._store: MutableMapping[str, Any] = {} if store is None else store
        # (session_id, path) -> open request_ids; request_id -> its (session_id, path)
        self._by_file: dict[tuple[str, str], set[str]] = {}
        self._file_of: dict[str, tuple[str, str]] = {}
        # Heaps of (due_ms, request_id). Entry keys are lower bounds (a touch only delays an
        # entry), corrected lazily when they reach the top; orphan keys are exact.
        self._entry_heap: list[tuple[int, str]] = []
        self._orphan_heap: list[tuple[int, str]] = []
        self._rebuild()

    # ---- public API -------------------------------------------------------------------------

    @property
    def watermark_ms(self) -> int | None:
        """The partition's event time: highest ts_ms (or tick) seen so far."""
        wm = self._store.get(WATERMARK_KEY)
        return wm if _is_int(wm) else None

    @property
    def open_count(self) -> int:
        """Number of open prediction entries (orphan settled events not included)."""
        return len(self._file_of)

    def due_ms(self) -> int | None:
        """Earliest time at which an entry settles or an orphan expires, for idle scheduling."""
        best: int | None = None
        while self._entry_heap:
            key, rid = self._entry_heap[0]
            st = self._store.get(_S + rid)
            if st is None:
                heapq.heappop(self._entry_heap)
                continue
            due = self._due(st)[0]
            if due != key:
                # stale lower bound: replace it with the real due time and look again
                heapq.heapreplace(self._entry_heap, (due, rid))
                continue
            best = key
            break
        while self._orphan_heap:
            key, rid = self._orphan_heap[0]
            if self._orphan_expiry(rid) != key:
                heapq.heappop(self._orphan_heap)
                continue
            best = key if best is None else min(best, key)
            break
        return best

    def apply(self, event: dict[str, Any]) -> Applied:
        """Apply one contract event, in partition order.

        Event time first moves to the event's ts_ms and everything due by then settles; only
        then is the event applied. An event that cannot be applied returns an error and
        changes nothing, not even the watermark.
        """
        if not isinstance(event, dict):
            return _failed("invalid_event")
        etype = event.get("type")
        if etype == "control":
            return self._apply_control(event)
        planner = self._planners.get(etype) if isinstance(etype, str) else None
        if planner is None:
            return _failed("unknown_type")
        rid = event.get("request_id")
        if etype in ("settled", "outcome") and isinstance(rid, str) and (
                _forget_key(rid) in self._store and _S + rid not in self._store):
            return Applied([], [], discarded="prediction_discarded")
        if event.get("v") != 1 or isinstance(event.get("v"), bool):
            return _failed("unsupported_version")
        ts = event.get("ts_ms")
        if not _is_int(ts) or not isinstance(event.get("session_id"), str):
            return _failed("invalid_event")
        wm = self.watermark_ms
        new_wm = ts if wm is None else max(wm, ts)
        plan = planner(self, event, new_wm)
        if isinstance(plan, str):
            return _failed(plan)
        settled: list[Record] = []
        expired: list[Record] = []
        self._advance_to(new_wm, settled, expired)
        plan(settled, expired)
        # a late prediction (ts below the watermark) may already be due: keep the invariant
        # that nothing open is due at or before the watermark
        self._settle_due(new_wm, settled, expired)
        return Applied(settled, expired)

    def advance(self, watermark_ms: int) -> Applied:
        """Move event time forward (idle tick) and settle what became due; never goes back."""
        if not _is_int(watermark_ms):
            return _failed("invalid_watermark")
        settled: list[Record] = []
        expired: list[Record] = []
        wm = self.watermark_ms
        if wm is None or watermark_ms > wm:
            self._advance_to(watermark_ms, settled, expired)
        return Applied(settled, expired)

    def flush(self) -> Applied:
        """Settle every open entry as if event time had passed them, and expire all orphans.

        The watermark itself is left where it is: flush marks the end of a finite input, it
        does not claim that time has advanced.
        """
        settled: list[Record] = []
        expired: list[Record] = []
        pending = []
        for rid in self._file_of:
            due, reason = self._due(self._store[_S + rid])
            pending.append((due, rid, reason))
        for due, rid, reason in sorted(pending):
            settled.append(self._settle(rid, reason, due))
        # every waiting orphan has exactly one exact heap item; no need to scan the store
        orphans = {(key, rid) for key, rid in self._orphan_heap if self._orphan_expiry(rid) == key}
        for _, rid in sorted(orphans):
            expired.append(self._expire(rid))
        self._entry_heap.clear()
        self._orphan_heap.clear()
        return Applied(settled, expired)

    def discard_request(self, request_id: str) -> Applied:
        """Ingest discarded this request's prediction for privacy: remember it, so its later
        events are discarded too, and drop a client ``settled`` event already waiting for it.
        Event time does not move (the discarded event's content, ``ts_ms`` included, is not
        used)."""
        if self._open_after(request_id, self.watermark_ms or 0):
            return Applied([], [])  # an open prediction with this id passed ingest: not ours
        if _O + request_id in self._store:
            del self._store[_O + request_id]  # its heap item goes stale and is skipped
        self._remember(request_id)
        return Applied([], [])

    def discard_file(self, session_id: str, path: str) -> Applied:
        """Ingest discarded an edit of ``path`` in ``session_id``: the open predictions of
        that file would settle on text that misses it, so they close without a record (their
        ids in ``dropped``) and are remembered like discarded predictions."""
        dropped = sorted(self._by_file.get((session_id, path), ()))
        for rid in dropped:
            del self._store[_S + rid]  # first, as in _settle
            del self._store[_K + rid]
            del self._store[_P + rid]
            self._unindex(rid)
            self._remember(rid)
        return Applied([], [], dropped=dropped)

    def _remember(self, rid: str) -> None:
        key = _forget_key(rid)
        expiry = (self.watermark_ms or 0) + self._ttl + self._q
        if key not in self._store:
            self._forgotten += 1
        self._store[key] = expiry
        heapq.heappush(self._forget_heap, (expiry, key))  # a renewed key's old item goes stale
        while self._forgotten > self._memory:
            self._forget_first(None)

    def _forget_first(self, until: int | None) -> bool:
        """Forget the remembered request that expires first (only if by ``until``)."""
        while self._forget_heap and (until is None or self._forget_heap[0][0] <= until):
            expiry, key = heapq.heappop(self._forget_heap)
            if self._store.get(key) == expiry:
                del self._store[key]
                self._forgotten -= 1
                return True
        return False

    # ---- event planners: validate against the post-advance state, return a commit ------------
    # A planner must not write anything; it returns an error reason or a closure that commits
    # the event after the watermark has moved and due entries have settled.

    def _plan_prediction(self, ev: dict[str, Any], new_wm: int) -> str | _Commit:
        rid, path, excerpt = ev.get("request_id"), ev.get("path"), ev.get("excerpt")
        start, rng, cursor = ev.get("excerpt_start"), ev.get("editable_range"), ev.get("cursor")
        if not (isinstance(rid, str) and isinstance(path, str) and isinstance(excerpt, str)):
            return "invalid_event"
        if not _is_int(start) or start < 0 or not _is_int(cursor):
            return "invalid_event"
        raw = _utf8(excerpt)
        if raw is None:
            return "invalid_text"
        if not (isinstance(rng, list) and len(rng) == 2 and all(_is_int(x) for x in rng)):
            return "invalid_editable_range"
        lo, hi = rng
        if lo > hi or not (_is_boundary(raw, lo) and _is_boundary(raw, hi)):
            return "invalid_editable_range"
        if not _is_boundary(raw, cursor):
            return "invalid_cursor"
        if not _plain_json(ev):
            return "invalid_event"  # it is stored and copied into the record
        if self._open_after(rid, new_wm):
            return "duplicate_request_id"
        orphan_waits = self._orphan_after(rid, new_wm)
        ts: int = ev["ts_ms"]
        key = (ev["session_id"], path)

        def commit(settled: list[Record], expired: list[Record]) -> None:
            pred = copy.deepcopy(ev)
            if orphan_waits:
                # the editor settled this request before its prediction reached us
                orphan = self._store[_O + rid]
                del self._store[_O + rid]
                base = raw[lo:hi].decode()
                settled.append(
                    _record(pred, "client", orphan["ts_ms"], base, orphan["settled_region"], {})
                )
                return
            self._store[_P + rid] = pred
            self._store[_K + rid] = excerpt
            state = {
                "ts": ts,
                "last": ts,
                "n": 0,
                "k0": start,
                "klen": len(raw),
                "r0": start + lo,
                "r1": start + hi,
            }
            self._store[_S + rid] = state  # written last: the entry is now open
            self._index(rid, key)
            heapq.heappush(self._entry_heap, (self._due(state)[0], rid))

        return commit

    def _plan_edit(self, ev: dict[str, Any], new_wm: int) -> str | _Commit:
        path, a, b, text = ev.get("path"), ev.get("start"), ev.get("end"), ev.get("text")
        if not (isinstance(path, str) and isinstance(text, str) and _is_int(a) and _is_int(b)):
            return "invalid_event"
        if a < 0 or a > b:
            return "invalid_edit_range"
        raw = _utf8(text)
        if raw is None:
            return "invalid_text"
        ts: int = ev["ts_ms"]
        steps: list[tuple[str, _Step]] = []
        # sorted: context_lost settles of one edit come out in request_id order
        for rid in sorted(self._by_file.get((ev["session_id"], path), ())):
            st = self._store[_S + rid]
            if self._due(st)[0] <= new_wm:
                continue  # settles before this edit applies
            step = self._track(rid, st, a, b, raw, ts)
            if isinstance(step, str):
                return step
            steps.append((rid, step))

        def commit(settled: list[Record], expired: list[Record]) -> None:
            for rid, step in steps:
                if step.lost:
                    settled.append(self._settle(rid, "context_lost", ts))
                    continue
                if step.known is not None:
                    self._store[_K + rid] = step.known
                if step.state is not None:
                    self._store[_S + rid] = step.state
                    # due times only grow, so the heap key already there stays a lower bound

        return commit

    def _plan_settled(self, ev: dict[str, Any], new_wm: int) -> str | _Commit:
        rid, region = ev.get("request_id"), ev.get("settled_region")
        if not (isinstance(rid, str) and isinstance(region, str)):
            return "invalid_event"
        if _utf8(region) is None:
            return "invalid_text"
        ts: int = ev["ts_ms"]
        if self._open_after(rid, new_wm):

            def settle_now(settled: list[Record], expired: list[Record]) -> None:
                settled.append(self._settle(rid, "client", ts, region))

            return settle_now
        if self._orphan_after(rid, new_wm):
            return "duplicate_settled"
        if not _plain_json(ev):
            return "invalid_event"  # it is stored until its prediction comes

        def keep_orphan(settled: list[Record], expired: list[Record]) -> None:
            self._store[_O + rid] = copy.deepcopy(ev)
            heapq.heappush(self._orphan_heap, (ts + self._ttl, rid))

        return keep_orphan

    def _plan_outcome(self, ev: dict[str, Any], new_wm: int) -> str | _Commit:
        rid, outcome, shown = ev.get("request_id"), ev.get("outcome"), ev.get("was_shown")
        valid_outcome = isinstance(outcome, str) and outcome in OUTCOMES  # may be unhashable
        if not (isinstance(rid, str) and valid_outcome and isinstance(shown, bool)):
            return "invalid_event"
        if not self._open_after(rid, new_wm):
            return "unknown_request"

        def commit(settled: list[Record], expired: list[Record]) -> None:
            state = dict(self._store[_S + rid])
            state["outcome"] = outcome
            state["was_shown"] = shown
            self._store[_S + rid] = state

        return commit

    _planners: ClassVar[dict[str, _Planner]] = {
        "prediction": _plan_prediction,
        "edit": _plan_edit,
        "settled": _plan_settled,
        "outcome": _plan_outcome,
    }

    def _apply_control(self, ev: dict[str, Any]) -> Applied:
        op = ev.get("op")
        if op == "tick":
            wm = ev.get("watermark_ms")
            return self.advance(wm) if _is_int(wm) else _failed("invalid_watermark")
        if op == "flush":
            return self.flush()
        return _failed("unknown_control_op")

    # ---- tracking ---------------------------------------------------------------------------

    def _track(
        self, rid: str, st: dict[str, Any], a: int, b: int, text: bytes, ts: int
    ) -> _Step | str:
        """Plan the effect of replacing file bytes [a, b) with ``text`` on one entry."""
        k0, r0, r1 = st["k0"], st["r0"], st["r1"]
        k1 = k0 + st["klen"]
        touches = a <= r1 and b >= r0
        inside = k0 <= a and b <= k1
        if touches and not inside:
            return _Step(lost=True)
        length = len(text)
        delta = length - (b - a)
        new = dict(st)  # a fresh value: stored values are never mutated
        new["r0"] = _move(r0, a, b, length, end=False)
        new["r1"] = _move(r1, a, b, length, end=True)
        known: str | None = None
        if inside:
            buf = self._known_bytes(rid)
            ia, ib = a - k0, b - k0
            if not (_is_boundary(buf, ia) and _is_boundary(buf, ib)):
                return "offset_splits_character"
            buf = buf[:ia] + text + buf[ib:]
            known = buf.decode()
            new["klen"] = len(buf)
        elif b <= k0:
            new["k0"] = k0 + delta  # wholly before K: everything shifts
        elif a < k1:
            # Partly overlaps K without touching R: keep the side of K that holds R, cut at a
            # character boundary (widening the unknown part) so the known text stays valid.
            buf = self._known_bytes(rid)
            if a < k0:
                cut = b - k0
                while not _is_boundary(buf, cut):
                    cut += 1
                buf = buf[cut:]
                new["k0"] = k0 + cut + delta
            else:
                cut = a - k0
                while not _is_boundary(buf, cut):
                    cut -= 1
                buf = buf[:cut]
            known = buf.decode()
            new["klen"] = len(buf)
        if touches:
            new["last"] = max(st["last"], ts)
            new["n"] = st["n"] + 1
        return _Step(state=None if new == st else new, known=known)

    def _known_bytes(self, rid: str) -> bytes:
        return str(self._store[_K + rid]).encode("utf-8")

    def _region(self, rid: str, st: dict[str, Any]) -> str:
        buf = self._known_bytes(rid)
        return buf[st["r0"] - st["k0"] : st["r1"] - st["k0"]].decode()

    # ---- time -------------------------------------------------------------------------------

    def _due(self, st: dict[str, Any]) -> tuple[int, str]:
        """When an entry is due and why; quiescence wins a tie with the TTL."""
        quiet = st["last"] + self._q
        ttl = st["ts"] + self._ttl
        return (quiet, "quiescence") if quiet <= ttl else (ttl, "ttl")

    def _orphan_expiry(self, rid: str) -> int | None:
        orphan = self._store.get(_O + rid)
        return None if orphan is None else orphan["ts_ms"] + self._ttl

    def _open_after(self, rid: str, wm: int) -> bool:
        """Whether the entry is open and will still be open once event time reaches ``wm``."""
        st = self._store.get(_S + rid)
        return st is not None and self._due(st)[0] > wm

    def _orphan_after(self, rid: str, wm: int) -> bool:
        expiry = self._orphan_expiry(rid)
        return expiry is not None and expiry > wm

    def _advance_to(self, wm: int, settled: list[Record], expired: list[Record]) -> None:
        if self.watermark_ms != wm:
            self._store[WATERMARK_KEY] = wm
        self._settle_due(wm, settled, expired)

    def _settle_due(self, wm: int, settled: list[Record], expired: list[Record]) -> None:
        """Settle entries and expire orphans due at or before ``wm``, in (due, request_id) order."""
        while self._entry_heap and self._entry_heap[0][0] <= wm:
            key, rid = heapq.heappop(self._entry_heap)
            st = self._store.get(_S + rid)
            if st is None:
                continue  # already settled
            due, reason = self._due(st)
            if due > key:
                heapq.heappush(self._entry_heap, (due, rid))  # touched since: re-queue
            elif due == key:
                settled.append(self._settle(rid, reason, due))
            # due < key: a stale key from an earlier entry with this request_id; the current
            # entry has its own, smaller key
        while self._orphan_heap and self._orphan_heap[0][0] <= wm:
            key, rid = heapq.heappop(self._orphan_heap)
            if self._orphan_expiry(rid) == key:
                expired.append(self._expire(rid))
        while self._forget_first(wm):
            pass

    # ---- settling ---------------------------------------------------------------------------

    def _settle(self, rid: str, reason: str, at: int, region: str | None = None) -> Record:
        """Close an open entry and build its record (``region`` given: the client's text)."""
        st = self._store[_S + rid]
        pred = self._store[_P + rid]
        if region is None:
            region = self._region(rid, st)
        base = _base_region(pred)
        del self._store[_S + rid]  # first: from here on the entry counts as closed
        del self._store[_K + rid]
        del self._store[_P + rid]
        self._unindex(rid)
        return _record(pred, reason, at, base, region, st)

    def _expire(self, rid: str) -> Record:
        orphan = copy.deepcopy(self._store[_O + rid])
        del self._store[_O + rid]
        return dict(orphan)

    # ---- in-memory indexes ------------------------------------------------------------------

    def _index(self, rid: str, key: tuple[str, str]) -> None:
        self._by_file.setdefault(key, set()).add(rid)
        self._file_of[rid] = key

    def _unindex(self, rid: str) -> None:
        key = self._file_of.pop(rid)
        rids = self._by_file[key]
        rids.discard(rid)
        if not rids:
            del self._by_file[key]

    def _rebuild(self) -> None:
        """Rebuild the heaps and the file index from the store (restart after a crash)."""
        keys = list(self._store.keys())
        present = set(keys)
        for key in keys:
            prefix, rid = key[:2], key[2:]
            if prefix == _S:
                if _P + rid not in present or _K + rid not in present:
                    del self._store[key]  # fragment of an interrupted settle
                    continue
                st = self._store[key]
                pred = self._store[_P + rid]
                self._index(rid, (pred["session_id"], pred["path"]))
                self._entry_heap.append((self._due(st)[0], rid))
            elif prefix in (_P, _K):
                if _S + rid not in present:
                    del self._store[key]  # fragment of an interrupted open or settle
            elif prefix == _O:
                self._orphan_heap.append((self._store[key]["ts_ms"] + self._ttl, rid))
            elif prefix == _X:
                self._forget_heap.append((self._store[key], key))
                self._forgotten += 1
        heapq.heapify(self._entry_heap)
        heapq.heapify(self._orphan_heap)
        heapq.heapify(self._forget_heap)


def _forget_key(request_id: str) -> str:
    """The store key of a request discarded for privacy: a digest, not the id itself."""
    return _X + hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"),
                                digest_size=12).hexdigest()


def _base_region(pred: dict[str, Any]) -> str:
    """The region text at request time, cut from the excerpt at its byte offsets."""
    lo, hi = pred["editable_range"]
    return str(pred["excerpt"]).encode("utf-8")[lo:hi].decode()


def _record(
    pred: dict[str, Any],
    reason: str,
    at: int,
    base: str,
    region: str,
    st: dict[str, Any],
) -> Record:
    """A settled example: the prediction's fields (sorted, for a key order that survives any
    store round trip) without ``type``, then the settle fields in a fixed order."""
    rec: Record = {
        k: copy.deepcopy(pred[k]) for k in sorted(pred) if k != "type" and k not in _OWN_FIELDS
    }
    rec["settle_reason"] = reason
    rec["settled_at_ms"] = at
    rec["base_region"] = base
    rec["settled_region"] = region
    rec["touching_edits"] = st.get("n", 0)
    if "outcome" in st:
        rec["outcome"] = st["outcome"]
        rec["was_shown"] = st["was_shown"]
    return rec


@dataclass(frozen=True, slots=True)
class Forget:
    """A record ingest discarded for privacy, by the identifiers its verdict carries: the
    request id of a discarded prediction, or the session and path of a discarded edit."""

    request_id: str | None = None
    session_id: str | None = None
    path: str | None = None


def _forget(machine: SettleMachine, item: Forget) -> list[str]:
    if item.request_id is not None:
        machine.discard_request(item.request_id)
    elif item.session_id is not None and item.path is not None:
        return machine.discard_file(item.session_id, item.path).dropped
    return []


def settle_events(
    events: Iterable[dict[str, Any] | Forget],
    *,
    quiescence_ms: int = 10_000,
    ttl_ms: int = 300_000,
    flush: bool = True,
) -> list[Record]:
    """Settle a finite, partition-ordered event stream offline; errors and orphans are dropped.

    ``events`` are what ingest made of the records (`batch_item`): a `Forget` stands for one it
    discarded for privacy, so offline settling matches the worker's."""
    machine = SettleMachine(quiescence_ms=quiescence_ms, ttl_ms=ttl_ms)
    out: list[Record] = []
    for event in events:
        if isinstance(event, Forget):
            _forget(machine, event)
            continue
        out.extend(machine.apply(event).settled)
    if flush:
        out.extend(machine.flush().settled)
    return out
