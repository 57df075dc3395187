"""`schemas.load` hands out copies nobody can corrupt."""

from __future__ import annotations

import json
from typing import Any

import pytest

import schemas


def from_file(topic: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (schemas.SCHEMA_DIR / schemas.TOPIC_SCHEMAS[topic]).read_text())
    return data


# ----------------------------------------------------------------------------- load


@pytest.mark.parametrize("topic", sorted(schemas.TOPIC_SCHEMAS))
def test_load_is_the_file_after_compiling_and_validating(topic: str) -> None:
    schemas.compiled_edit_event_validator()
    schemas.validator(topic)
    assert schemas.load(topic) == from_file(topic)


def test_load_hands_out_independent_copies() -> None:
    first = schemas.load("edit-events")
    first["$defs"]["offset"]["minimum"] = -5
    first["properties"].clear()
    assert schemas.load("edit-events") == from_file("edit-events")
    # the cached validators do not see the caller's change either
    assert schemas.errors("edit-events", prediction(cursor=-1)) != []


def test_declared_draft() -> None:
    for topic in schemas.TOPIC_SCHEMAS:
        assert from_file(topic)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# ----------------------------------------------------------------------------- helpers



def prediction(**kw: Any) -> dict[str, Any]:
    ev = {"v": 1, "type": "prediction", "session_id": "s1", "ts_ms": 5, "can_collect_data": True,
          "request_id": "r1", "path": "src/app.py", "in_open_source_repo": True,
          "excerpt": "héllo = 1\n", "excerpt_start": 0, "cursor": 3,
          "editable_range": [0, 11], "history": []}
    ev.update(kw)
    return ev
