"""The wire contract as code: one JSON Schema per topic, and validators built from them.

The schemas are the source of truth shared with editor vendors (CONTRACT.md); the typed
records in `schemas.records` mirror them for the type checker. Ingest validation runs once per
event on the hot path: jsonschema-rs (a Rust implementation of 2020-12) accepts the valid
ones, and compiled validators (fastjsonschema) decide and word the rest; tests and tools use
`jsonschema` for full error reports and cross-schema references.

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
import jsonschema_rs
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
    "eval-results": "eval-results.v1.json",
    "scorecard": "scorecard.v1.json",
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
def _rust_edit_event_validator() -> jsonschema_rs.Validator:
    """jsonschema-rs (Rust) built from the 2020-12 schema as it is: it decides a valid event
    in ~2 µs, against ~16 µs for the compiled one (BENCHMARKS.md, gateway). It is only
    trusted to accept: `validate_edit_event` has fastjsonschema decide and word the rest."""
    return jsonschema_rs.validator_for(load("edit-events"))


def _fast_accepts(event: Any) -> bool:
    """True when jsonschema-rs finds `event` valid; False when it does not, or cannot read
    it (a key that is not a string: such an event goes to the compiled validators)."""
    try:
        return bool(_rust_edit_event_validator().is_valid(event))
    except (ValueError, TypeError, OverflowError):
        return False


def validate_edit_event(event: Any) -> Any:
    """Validate one edit event; raises `fastjsonschema.JsonSchemaException` exactly as
    `compiled_edit_event_validator()` does (same verdict, same message).

    An event jsonschema-rs accepts is valid (`_fast_accepts`); the compiled validator decides
    any other (they rarely disagree: a key that is not a string) and words its rejection."""
    if _fast_accepts(event):
        return event
    return compiled_edit_event_validator()(event)
