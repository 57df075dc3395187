"""The answer key of generated traces, settled offline by the pipeline's own rules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.generate.config import QUIESCENCE_MS, TTL_MS
from streams.settle import settle_events


def ground_truth(events: Iterable[dict[str, Any]], *, quiescence_ms: int = QUIESCENCE_MS,
                 ttl_ms: int = TTL_MS) -> list[dict[str, Any]]:
    """The answer key of generated traces: per prediction, the region as the user left it.

    Settled offline by the pipeline's own rules (``streams.settle``), per session in event
    order, so the model simulator's teacher can answer from it without reading any hindsight
    from a prompt. Rows: ``request_id``, ``path``, ``base_region`` (at request time),
    ``cursor_in_region`` (chars), ``settled_region``.
    """
    by_session: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_session.setdefault(event["session_id"], []).append(event)
    rows = []
    for session_events in by_session.values():
        for rec in settle_events(session_events, quiescence_ms=quiescence_ms, ttl_ms=ttl_ms):
            raw = rec["excerpt"].encode()
            start, end = rec["editable_range"]
            cursor = min(max(rec["cursor"], start), end)
            rows.append({"request_id": rec["request_id"], "path": rec["path"],
                         "base_region": rec["base_region"],
                         "cursor_in_region": len(raw[start:cursor].decode()),
                         "settled_region": rec["settled_region"]})
    return sorted(rows, key=lambda r: r["request_id"])
