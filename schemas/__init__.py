"""The wire contract as code: one JSON Schema per topic, and validators built from them.

The schemas are the source of truth shared with editor vendors (CONTRACT.md); the typed
records in `schemas.records` mirror them for the type checker. Ingest validation uses a
compiled validator (fastjsonschema) because it runs once per event on the hot path; tests and
tools use `jsonschema` for full error reports and cross-schema references.

The files declare draft 2020-12; fastjsonschema implements drafts 04-07, so the fast validator
compiles a draft-07 translation of the schema (see `_as_draft07`) that accepts and rejects
what the 2020-12 `validator` does, for the keywords these schemas use.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema
from referencing import Registry, Resource

SCHEMA_DIR = Path(__file__).resolve().parent
TOPIC_SCHEMAS = {
    "edit-events": "edit-events.v1.json",
    "settled-examples": "settled-examples.v1.json",
    "student-samples": "student-samples.v1.json",
    "scored-examples": "scored-examples.v1.json",
    "repair": "repair.v1.json",
    "model-retry": "model-retry.v1.json",
    "training-records": "training-records.v1.json",
    "rejected-examples": "rejected-examples.v1.json",
    "dlq": "dlq.v1.json",
}


@cache
def _parsed(topic: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMA_DIR / TOPIC_SCHEMAS[topic]).read_text())
    return data


def load(topic: str) -> dict[str, Any]:
    """The JSON Schema of `topic` (a key of TOPIC_SCHEMAS): a fresh copy on every call.

    A copy because consumers rewrite what they are given (fastjsonschema.compile turns every
    `$ref` into an absolute URI in place); the cached parse stays as the file says."""
    return copy.deepcopy(_parsed(topic))


@cache
def _registry() -> Registry:
    loaded = {t: Resource.from_contents(load(t)) for t in TOPIC_SCHEMAS}
    resources = [(f, loaded[t]) for t, f in TOPIC_SCHEMAS.items()]
    ids = [(r.contents["$id"], r) for r in loaded.values()]
    return Registry().with_resources(resources + ids)


@cache
def validator(topic: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(load(topic), registry=_registry())


def errors(topic: str, record: Any) -> list[str]:
    """Every schema violation of `record`, as readable strings (empty when valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator(topic).iter_errors(record)
    ]


# keywords whose value maps names to subschemas (the names are not keywords)
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
# keywords whose value is instance data, not a schema
_DATA = ("const", "enum", "default", "examples")


def _as_draft07(schema: Any) -> Any:
    """`schema` (draft 2020-12) with its tuple keywords in draft-07 form, for fastjsonschema.

    fastjsonschema silently ignores the 2020-12 `prefixItems`, and would apply a sibling
    `items` to every element instead of only those after the prefix. Draft-07 spells the same
    constraint `items: [...]` plus `additionalItems`. The other 2020-12 keywords used by the
    schemas (`$defs` via JSON-pointer `$ref`, `const`, `if`/`then`) mean the same in draft-07
    (none of their `$ref`s has siblings, which draft-07 would ignore);
    `tests/streams/test_schemas_loading.py` checks both validators agree."""
    if isinstance(schema, list):
        return [_as_draft07(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DATA:
            out[key] = value
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _as_draft07(sub) for name, sub in value.items()}
        else:
            out[key] = _as_draft07(value)
    if "prefixItems" in out:
        prefix = out.pop("prefixItems")
        if "items" in out:
            out["additionalItems"] = out.pop("items")
        out["items"] = prefix
    if "$schema" in out:
        out["$schema"] = "http://json-schema.org/draft-07/schema#"
    return out


@cache
def compiled_edit_event_validator() -> Callable[[Any], Any]:
    """A fast validator for ingest; raises `fastjsonschema.JsonSchemaException`."""
    return fastjsonschema.compile(_as_draft07(load("edit-events")))


@cache
def _edit_event_validators_by_type() -> dict[str, Callable[[Any], Any]]:
    """One compiled validator per event type: the schema's common part plus that type's
    branch only. fastjsonschema evaluates each `if` of the full schema by raising and catching
    an exception, so every event paid for four failed branches (~10 µs of its ~16 µs)."""
    schema = _as_draft07(load("edit-events"))
    common = {key: value for key, value in schema.items() if key != "allOf"}
    by_type: dict[str, Callable[[Any], Any]] = {}
    for branch in schema["allOf"]:
        kind = branch["if"]["properties"]["type"]["const"]
        by_type[kind] = fastjsonschema.compile({**common, "allOf": [branch["then"]]})
    return by_type


# Hand-written acceptance for the editors' event types (edits are ~85 % of all events):
# True only for an event the schema certainly accepts (exact Python types within the
# schema's bounds; fields the schema does not name are free, as in the schema). Anything
# else, including whatever these checks are unsure of (`3.0`, `True` for an int), goes to
# the compiled validators, which decide and word the rejection (control events, internal
# and rare, always do). fastjsonschema's nested functions cost several times as much.
# `tests/streams/test_schemas_loading.py` checks they never accept what the schema refuses
# and pins the parts of the schema they were written for: change those, revisit these.
_MAX_TS_MS = 9007199254740991
_MAX_OFFSET = 4294967295
_OUTCOMES = frozenset({"accepted", "rejected", "discarded", "ignored"})


def _common_ok(ev: dict[str, Any]) -> bool:
    v, sid, ts = ev.get("v"), ev.get("session_id"), ev.get("ts_ms")
    return (type(v) is int and v == 1 and type(sid) is str and 0 < len(sid) <= 128
            and type(ts) is int and 0 <= ts <= _MAX_TS_MS
            and type(ev.get("can_collect_data")) is bool)


def _offset_ok(x: Any) -> bool:
    return type(x) is int and 0 <= x <= _MAX_OFFSET


def _request_id_ok(x: Any) -> bool:
    return type(x) is str and 0 < len(x) <= 256


def _edit_ok(ev: dict[str, Any]) -> bool:
    path = ev.get("path")
    return (_common_ok(ev) and type(path) is str and 0 < len(path) <= 4096
            and _offset_ok(ev.get("start")) and _offset_ok(ev.get("end"))
            and type(ev.get("text")) is str and type(ev.get("predicted")) is bool)


def _outcome_ok(ev: dict[str, Any]) -> bool:
    outcome = ev.get("outcome")
    return (_common_ok(ev) and _request_id_ok(ev.get("request_id"))
            and type(outcome) is str and outcome in _OUTCOMES
            and type(ev.get("was_shown")) is bool)


def _settled_ok(ev: dict[str, Any]) -> bool:
    return (_common_ok(ev) and _request_id_ok(ev.get("request_id"))
            and type(ev.get("settled_region")) is str)


def _optional_text_ok(ev: dict[str, Any], key: str, max_length: int | None) -> bool:
    """Absent, null, or a string of at most `max_length` characters."""
    if key not in ev:
        return True
    x = ev[key]
    return x is None or (type(x) is str and (max_length is None or len(x) <= max_length))


def _history_entry_ok(entry: Any) -> bool:
    if type(entry) is not dict:
        return False
    path, ts = entry.get("path"), entry.get("ts_ms")
    return (type(path) is str and 0 < len(path) <= 4096 and type(entry.get("diff")) is str
            and type(entry.get("predicted")) is bool and type(ts) is int and ts >= 0)


def _prediction_ok(ev: dict[str, Any]) -> bool:
    path, rng, history = ev.get("path"), ev.get("editable_range"), ev.get("history")
    return (_common_ok(ev) and _request_id_ok(ev.get("request_id"))
            and type(path) is str and 0 < len(path) <= 4096
            and type(ev.get("in_open_source_repo")) is bool
            and type(ev.get("excerpt")) is str
            and _offset_ok(ev.get("excerpt_start")) and _offset_ok(ev.get("cursor"))
            and type(rng) is list and len(rng) == 2
            and _offset_ok(rng[0]) and _offset_ok(rng[1])
            and type(history) is list and all(map(_history_entry_ok, history))
            and _optional_text_ok(ev, "repo_url", 2048)
            and _optional_text_ok(ev, "revision", 256)
            and _optional_text_ok(ev, "model_version", 256)
            and _optional_text_ok(ev, "output", None))


_SURELY_VALID: dict[str, Callable[[dict[str, Any]], bool]] = {
    "edit": _edit_ok, "outcome": _outcome_ok, "settled": _settled_ok,
    "prediction": _prediction_ok}


def validate_edit_event(event: Any) -> Any:
    """Validate one edit event; raises `fastjsonschema.JsonSchemaException` exactly as
    `compiled_edit_event_validator()` does (same verdict, same message).

    An event the hand-written checks vouch for is valid (see `_SURELY_VALID`); otherwise the
    type's own validator decides a valid event; anything it refuses goes through the full
    validator, so a rejection always carries the full schema's message."""
    kind = event.get("type") if isinstance(event, dict) else None
    surely = _SURELY_VALID.get(kind) if isinstance(kind, str) else None
    if surely is not None and surely(event):
        return event
    fast = _edit_event_validators_by_type().get(kind) if isinstance(kind, str) else None
    if fast is not None:
        try:
            return fast(event)
        except fastjsonschema.JsonSchemaException:
            pass
    return compiled_edit_event_validator()(event)
