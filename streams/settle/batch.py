"""Batches: what the worker's settle runner applies per fetched batch of a partition.

A partition's machine works on a :class:`StagedStore`, whose writes are staged over the
landed state until the runner has sent them (to the changelog) and commits or drops them;
:func:`apply_batch` applies a fetched batch's records in order and collects the outcome.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.ingest import Accepted, Discarded, Verdict
from streams.settle.machine import Applied, Forget, SettleMachine, _forget


def batch_item(verdict: Verdict) -> dict[str, Any] | Forget | None:
    """What the machine gets for a record, given ingest's verdict on it: the event, a
    `Forget` with the identifiers of a privacy discard, or None for a rejected record."""
    if isinstance(verdict, Accepted):
        return verdict.event
    if isinstance(verdict, Discarded):
        return Forget(verdict.request_id, verdict.session_id, verdict.path)
    return None




_DELETED: Any = object()


class StagedStore(MutableMapping[str, Any]):
    """A machine's store whose writes are staged over the landed state ``base``.

    Reads see the staged writes; ``writes()`` is the coalesced change set (last value per key
    wins, a delete is ``None``, a key both created and deleted since the last landing is left
    out); ``land()`` applies it to ``base`` and ``discard()`` forgets it. The runner lands a
    batch's writes only once the batch's outputs and changelog records are committed (or
    acknowledged), so the state in memory never runs ahead of what Kafka holds.
    """

    __slots__ = ("_staged", "base")

    def __init__(self, base: dict[str, Any] | None = None) -> None:
        self.base: dict[str, Any] = {} if base is None else base
        self._staged: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        staged = self._staged
        if key in staged:
            value = staged[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.base[key]

    def get(self, key: str, default: Any = None) -> Any:
        staged = self._staged
        if key in staged:
            value = staged[key]
            return default if value is _DELETED else value
        return self.base.get(key, default)

    def __contains__(self, key: object) -> bool:
        staged = self._staged
        if key in staged:
            return staged[key] is not _DELETED
        return key in self.base

    def __setitem__(self, key: str, value: Any) -> None:
        self._staged[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._staged[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        staged = self._staged
        yield from (k for k in list(self.base) if staged.get(k) is not _DELETED)
        yield from (k for k, v in list(staged.items())
                    if v is not _DELETED and k not in self.base)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def pending(self) -> bool:
        """Whether anything is staged."""
        return bool(self._staged)

    def writes(self) -> dict[str, Any]:
        """The staged changes, coalesced per key: the value, or None for a delete."""
        base = self.base
        return {k: (None if v is _DELETED else v) for k, v in self._staged.items()
                if v is not _DELETED or k in base}

    def land(self) -> None:
        base = self.base
        for key, value in self._staged.items():
            if value is not _DELETED:
                base[key] = value
            else:
                base.pop(key, None)
        self._staged.clear()

    def discard(self) -> None:
        self._staged.clear()


@dataclass(frozen=True, slots=True)
class BatchEvent:
    """One accepted event of a batch: what the machine made of it."""

    offset: int
    event: dict[str, Any]
    applied: Applied | None  # None: the machine raised (``crash`` names the exception)
    watermark_ms: int | None  # the partition's event time right after the event
    crash: str | None = None


@dataclass
class BatchOutcome:
    events: list[BatchEvent] = field(default_factory=list)  # in offset order
    # offset of a `Forget` -> request ids of open predictions it closed without a record
    dropped: dict[int, list[str]] = field(default_factory=dict)
    skipped: int = 0  # records at or below the applied offset: handled before, not again
    applied: int | None = None  # the partition's new applied offset (the batch's last)
    anchor_ms: int | None = None  # event time after the last non-control event, if any
    writes: dict[str, Any] = field(default_factory=dict)  # coalesced; None: delete


def apply_batch(machine: SettleMachine, store: StagedStore,
                items: Sequence[tuple[int, dict[str, Any] | Forget | None]],
                applied: int | None) -> BatchOutcome:
    """Apply a batch of one partition's records to ``machine`` (whose store is ``store``).

    ``items`` are ``(offset, event)`` in offset order, ``event`` None for a record that ingest
    rejected (it changes no state but is part of the batch) and a `Forget` for one it
    discarded for privacy (remembered, see `SettleMachine.discard_request`). Records at or below
    ``applied`` (the offset whose state last landed) were handled before a restart and are
    skipped. The machine's writes stay staged in ``store``; the outcome carries them
    coalesced, with the new applied offset, for the caller to send before ``store.land()``.
    An exception from the machine is caught per event (the event goes to the dead letters);
    anything it wrote before raising is kept, as it would be in a one-event batch.
    """
    out = BatchOutcome(applied=applied)
    for offset, event in items:
        if applied is not None and offset <= applied:
            out.skipped += 1
            continue
        out.applied = offset
        if event is None:
            continue
        if isinstance(event, Forget):
            dropped = _forget(machine, event)
            if dropped:
                out.dropped[offset] = dropped
            continue
        try:
            result: Applied | None = machine.apply(event)
            crash = None
        except Exception as exc:  # never let one record stop the partition
            result, crash = None, type(exc).__name__
        wm = machine.watermark_ms
        if event.get("type") != "control":
            out.anchor_ms = wm if wm is not None else event.get("ts_ms")
        out.events.append(BatchEvent(offset, event, result, wm, crash))
    out.writes = store.writes()
    return out
