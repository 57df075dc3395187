"""Ingest: raw bytes from `edit-events` → a contract event, a DLQ rejection, or a discard.

Order matters for privacy: the consent and path checks run on the parsed object *before*
schema validation, so an opted-out event that is also malformed is discarded (counted only),
never kept in the DLQ with its content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

from schemas import compiled_edit_event_validator
from streams.privacy import privacy_verdict
from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class Accepted:
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """Goes to the DLQ with the original bytes."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class Discarded:
    """Privacy: counted, never forwarded, never logged with content."""

    reason: str


Verdict = Accepted | Rejected | Discarded


def decode_event(raw: bytes | None, settings: Settings) -> Verdict:
    if raw is None:
        return Rejected("empty", "record has no value")
    if len(raw) > settings.max_event_bytes:
        return Rejected("too_large", f"{len(raw)} bytes > {settings.max_event_bytes}")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson reports invalid UTF-8 as a decode error too; tell the two apart for operators.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejected("invalid_utf8", f"invalid UTF-8 at byte {uexc.start}")
        return Rejected("invalid_json", str(exc)[:200])
    # Control events (idle ticks, flush) are written by the pipeline and carry no content.
    is_control = isinstance(event, dict) and event.get("type") == "control"
    discard = None if is_control else privacy_verdict(
        event, settings.disabled_globs, require_open_source=settings.require_open_source
    )
    if discard is not None:
        if discard == "no_consent" and not isinstance(event, dict):
            return Rejected("schema", "event is not a JSON object")
        return Discarded(discard)
    try:
        compiled_edit_event_validator()(event)
    except fastjsonschema.JsonSchemaException as exc:
        return Rejected("schema", str(exc.message)[:300])
    return Accepted(event)
