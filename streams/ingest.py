"""Ingest: the one verdict on an incoming event, for every way into `edit-events`.

Editors write through the gateway (`editstream/gateway/server.py`) or straight to Kafka; the
worker's
settle runner reads `edit-events` either way. Both ask `judge_event`, so an event gets the same
fate whichever path it took, with one result type and one vocabulary of reasons. The order
matters for privacy and is the contract's:

    consent → disabled paths (→ closed-source repositories) → secrets → personal data
    → size → schema → integer fields → offsets

Everything that could keep or echo content (the DLQ, a log line, an error returned to the
editor) comes after the privacy steps, so an opted-out event that is also malformed is
discarded (counted only), never dead-lettered with its bytes. A discarded event carries only
identifiers (`request_id` of a prediction, `session_id`/`path` of an edit): the settle stage
uses them so that privacy follows the prediction (its later `settled` and `outcome` events, and
predictions whose file lost an edit, are discarded too; `streams/settle/`).

After the schema, `float_in_integer_field` enforces what JSON Schema does not: a field the
contract types as integer must hold a Python `int`. JSON Schema counts `3.0` (and `1e3`) as
integers and orjson decodes them (and integers beyond 64 bits) as `float`, which cannot index
bytes; such events are rejected with the `schema` reason, so everything downstream sees ints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import fastjsonschema
import orjson

from schemas import validate_edit_event
from streams.pii import mask_event, may_hold_pii
from streams.privacy import privacy_verdict
from streams.secrets import find_secret
from streams.settings import Settings

# Fixed vocabularies: returned to editors and used as metric labels.
REJECT_REASONS = (
    "empty", "invalid_json", "invalid_utf8", "not_an_object", "too_deep", "too_large",
    "control_not_allowed", "schema", "invalid_editable_range", "invalid_cursor",
    "region_too_large",
)
DISCARD_REASONS = ("no_consent", "disabled_path", "not_open_source", "secret_detected",
                   "pii_detected")


@dataclass(frozen=True, slots=True)
class Accepted:
    """Forwarded: `event` as parsed (personal data masked), `value` its bytes on the topic."""

    event: dict[str, Any]
    value: bytes
    status: ClassVar[str] = "accepted"
    reason: ClassVar[None] = None
    detail: ClassVar[None] = None

    @property
    def key(self) -> bytes:
        return str(self.event["session_id"]).encode()


@dataclass(frozen=True, slots=True)
class Rejected:
    """Not usable: goes to the DLQ with the original bytes (the gateway answers it instead).
    `detail` never contains event content."""

    reason: str
    detail: str
    status: ClassVar[str] = "rejected"


@dataclass(frozen=True, slots=True)
class Discarded:
    """Privacy: counted, never forwarded, never logged with content. The identifiers let the
    settle stage discard what belongs to the same prediction or file."""

    reason: str
    request_id: str | None = None  # of a discarded prediction
    session_id: str | None = None  # of a discarded edit, with its path
    path: str | None = None
    status: ClassVar[str] = "discarded"
    detail: ClassVar[None] = None


Verdict = Accepted | Rejected | Discarded


def parse_json(raw: bytes) -> Any | Rejected:
    """The JSON value in `raw`, or why it is not one (invalid UTF-8 told apart from bad JSON,
    as orjson reports both as a decode error)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejected("invalid_utf8", f"invalid UTF-8 at byte {uexc.start}")
        return Rejected("invalid_json", str(exc)[:200])


def decode_event(raw: bytes | None, settings: Settings) -> Verdict:
    """The verdict on one record of `edit-events` (the worker's ingest)."""
    if not raw:  # a tombstone (None) or a zero-length value
        return Rejected("empty", "record has no value")
    item = parse_json(raw)
    if isinstance(item, Rejected):
        return item
    return judge_event(item, settings, internal=True)


def _discarded(reason: str, item: dict[str, Any]) -> Discarded:
    kind = item.get("type")
    if kind == "prediction" and isinstance(rid := item.get("request_id"), str):
        return Discarded(reason, request_id=rid)
    sid, path = item.get("session_id"), item.get("path")
    if kind == "edit" and isinstance(sid, str) and isinstance(path, str):
        return Discarded(reason, session_id=sid, path=path)
    return Discarded(reason)


def judge_event(item: Any, settings: Settings, *, internal: bool = False) -> Verdict:
    """One event's fate (see the module docstring for the order).

    `internal`: the record was read from `edit-events` itself, where the pipeline writes its
    own `control` events (idle ticks, flush); they carry no consent flag and no content. From
    editors (the gateway) a control event is refused.
    """
    if not isinstance(item, dict):
        return Rejected("not_an_object", "an event must be a JSON object")
    control = item.get("type") == "control"
    if not (control and internal):
        discard = privacy_verdict(item, settings.disabled_globs,
                                  require_open_source=settings.require_open_source)
        if discard is not None:
            return _discarded(discard, item)
    try:
        value = orjson.dumps(item)  # what would be written; scanned for secrets as is
    except TypeError:
        # orjson parses up to 1024 levels but writes at most 254
        return Rejected("too_deep", "nested deeper than 254 levels")
    if find_secret(value.decode()) is not None:
        # Only the reason is reported and counted; nothing about where or what the secret
        # was goes back to the client or into a log.
        return _discarded("secret_detected", item)
    if settings.pii_policy != "keep" and may_hold_pii(value):
        masked = mask_event(item)
        if masked is not item:
            if settings.pii_policy == "discard":
                return _discarded("pii_detected", item)
            item, value = masked, orjson.dumps(masked)
    if control and not internal:
        return Rejected("control_not_allowed", "control events are internal to the pipeline")
    if len(value) > settings.max_event_bytes:
        return Rejected("too_large", f"{len(value)} bytes > {settings.max_event_bytes}")
    try:
        validate_edit_event(item)
    except fastjsonschema.JsonSchemaException as exc:
        return Rejected("schema", str(getattr(exc, "message", exc))[:300])
    bad = float_in_integer_field(item)
    if bad is not None:
        return Rejected("schema", not_an_int_detail(bad))
    if item["type"] == "prediction":
        problem = _check_offsets(item, settings.max_region_bytes)
        if problem is not None:
            return Rejected(*problem)
    return Accepted(item, value)


def screen_settled(record: dict[str, Any], settings: Settings) -> dict[str, Any] | Discarded:
    """The verdict's content rules (secrets, personal data) once more, on a settled record.

    Its `settled_region` is assembled from edits that each passed ingest, so a credential or
    an address typed (or pasted) in pieces only appears here. Masking keeps byte lengths, as at
    ingest; a record with a credential leaves as `Discarded`.
    """
    if find_secret(orjson.dumps(record).decode()) is not None:
        return Discarded("secret_detected")
    if settings.pii_policy != "keep":
        masked = mask_event(record)
        if masked is not record:
            if settings.pii_policy == "discard":
                return Discarded("pii_detected")
            return dict(masked)
    return record


def is_boundary(raw: bytes, i: int) -> bool:
    """`i` is a UTF-8 character boundary inside (or at the end of) `raw`."""
    return 0 <= i <= len(raw) and (i == len(raw) or (raw[i] & 0xC0) != 0x80)


def _check_offsets(ev: dict[str, Any], max_region_bytes: int) -> tuple[str, str] | None:
    """Static checks of a prediction that the settle stage would otherwise dead-letter later
    (and that the gateway's editor learns about synchronously). Only for a schema-valid one
    whose integer fields hold ints (`float_in_integer_field`), so the offsets index bytes."""
    raw = ev["excerpt"].encode("utf-8", "surrogatepass")
    lo, hi = ev["editable_range"]
    if lo > hi or not (is_boundary(raw, lo) and is_boundary(raw, hi)):
        return "invalid_editable_range", "editable_range must be [start, end) on UTF-8 " \
            f"character boundaries of the {len(raw)}-byte excerpt"
    if not is_boundary(raw, ev["cursor"]):
        return "invalid_cursor", "cursor must be a UTF-8 character boundary of the excerpt"
    if hi - lo > max_region_bytes:
        return "region_too_large", f"editable region of {hi - lo} bytes > {max_region_bytes}"
    return None


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
