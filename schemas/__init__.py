"""The wire contract as code: one JSON Schema per topic, and validators built from them.

The schemas are the source of truth shared with editor vendors (CONTRACT.md); the typed
records in `schemas.records` mirror them for the type checker. Ingest validation uses a
compiled validator (fastjsonschema) because it runs once per event on the hot path; tests and
tools use `jsonschema` for full error reports and cross-schema references.
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


@cache
def compiled_edit_event_validator() -> Callable[[Any], Any]:
    """A fast validator for ingest; raises `fastjsonschema.JsonSchemaException`."""
    return fastjsonschema.compile(load("edit-events"))
