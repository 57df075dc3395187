"""Ingest: raw bytes from `edit-events` → a contract event, a DLQ rejection, or a discard.

Order matters for privacy: the consent and path checks run on the parsed object *before*
schema validation, so an opted-out event that is also malformed is discarded (counted only),
never kept in the DLQ with its content.

After the schema, `float_in_integer_field` enforces what JSON Schema does not: a field the
contract types as integer must hold a Python `int`. JSON Schema counts `3.0` (and `1e3`) as
integers and orjson decodes them (and integers beyond 64 bits) as `float`, which cannot index
bytes; such events are rejected with the `schema` reason here and in the gateway
(`streams.gateway_core.judge`), so everything downstream sees real ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson

from schemas import validate_edit_event
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
    if not raw:  # a tombstone (None) or a zero-length value
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
        validate_edit_event(event)
    except fastjsonschema.JsonSchemaException as exc:
        return Rejected("schema", str(exc.message)[:300])
    bad = float_in_integer_field(event)
    if bad is not None:
        return Rejected("schema", not_an_int_detail(bad))
    return Accepted(event)


def float_in_integer_field(ev: dict[str, Any]) -> str | None:
    """The first field that `schemas/edit-events.v1.json` types as integer but that holds a
    float in `ev`, as a `data.`-path like the validator's messages; None when all are ints.

    Only for an event the schema validator accepted (so every field read here exists, unless
    optional, and is a number). It walks the contract's integer fields by event type, not the
    whole document: this runs once per event on the ingest hot path. `type(x) is not int`
    also refuses `bool`, which the schema has already rejected anyway.
    `tests/streams/test_integer_fields.py` derives the integer fields from the schema file and
    checks each one is covered here.
    """
    if type(ev["ts_ms"]) is not int:
        return "data.ts_ms"
    kind = ev["type"]
    if kind == "edit":
        if type(ev["start"]) is not int:
            return "data.start"
        if type(ev["end"]) is not int:
            return "data.end"
    elif kind == "prediction":
        if type(ev["excerpt_start"]) is not int:
            return "data.excerpt_start"
        if type(ev["cursor"]) is not int:
            return "data.cursor"
        rng = ev["editable_range"]
        if type(rng[0]) is not int:
            return "data.editable_range[0]"
        if type(rng[1]) is not int:
            return "data.editable_range[1]"
        for i, entry in enumerate(ev["history"]):
            if type(entry["ts_ms"]) is not int:
                return f"data.history[{i}].ts_ms"
    elif kind == "control":
        wm = ev.get("watermark_ms")
        if wm is not None and type(wm) is not int:
            return "data.watermark_ms"
    return None


def not_an_int_detail(path: str) -> str:
    """The rejection detail for `float_in_integer_field`'s answer (names the field only)."""
    return (f"{path} must be an integer written without fraction or exponent "
            "(such as 3, not 3.0 or 3e0) and within 64 bits")
