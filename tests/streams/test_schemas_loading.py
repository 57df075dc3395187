"""`schemas.load` hands out copies nobody can corrupt, and the fast (fastjsonschema, draft-07)
and full (jsonschema, draft 2020-12) edit-event validators accept and reject the same events."""

from __future__ import annotations

import json
from typing import Any, NotRequired, get_origin, get_type_hints

import fastjsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from editstream.sessions.generate import GenerateConfig, generate_events
from schemas import records
from tests.streams.test_gateway_core import prediction


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


# ----------------------------------------------------------------------------- agreement


def fast_accepts(event: Any) -> bool:
    try:
        schemas.compiled_edit_event_validator()(event)
    except fastjsonschema.JsonSchemaException:
        return False
    return True


def full_accepts(event: Any) -> bool:
    return schemas.errors("edit-events", event) == []


BAD_RANGES = [["a", 3], [1], [1, 2, 3], [-1, 2], [1, -2], [None, 2], [True, 2], [0.5, 2],
              [0, 2**32], [[0], 2], [], "0,2", None, {"0": 0, "1": 2}]
GOOD_RANGES = [[0, 11], [0, 0], [3, 3], [0, 2**32 - 1], [1.0, 2]]  # 1.0: an integer to JSON Schema

BAD = [prediction(editable_range=r) for r in BAD_RANGES] + [
    prediction(cursor="3"), prediction(cursor=-1), prediction(excerpt_start=1.5),
    prediction(history=[{"path": "a", "diff": "", "predicted": True}]),
    prediction(history=[{"path": "", "diff": "", "predicted": True, "ts_ms": 1}]),
    prediction(v=2), prediction(type="nope"), prediction(session_id=""),
    {k: v for k, v in prediction().items() if k != "editable_range"},
    {"v": 1, "type": "edit", "session_id": "s", "ts_ms": 1, "can_collect_data": True,
     "path": "a.py", "start": 0, "end": "1", "text": "", "predicted": False},
    {"v": 1, "type": "control", "session_id": "s", "ts_ms": 1, "can_collect_data": False,
     "op": "tick"},
    {"v": 1, "type": "outcome", "session_id": "s", "ts_ms": 1, "can_collect_data": True,
     "request_id": "r", "outcome": "maybe", "was_shown": True},
    [], "event", None,
]
GOOD = [prediction(editable_range=r) for r in GOOD_RANGES] + [
    prediction(extra_field={"anything": [1]}),  # forward compatible
    prediction(history=[{"path": "a", "diff": "", "predicted": True, "ts_ms": 1}]),
    {"v": 1, "type": "control", "session_id": "s", "ts_ms": 1, "can_collect_data": False,
     "op": "tick", "watermark_ms": 0},
    {"v": 1, "type": "settled", "session_id": "s", "ts_ms": 1, "can_collect_data": True,
     "request_id": "r", "settled_region": ""},
]


def short(event: Any) -> str:
    return json.dumps(event)[-60:]


@pytest.mark.parametrize("event", BAD, ids=short)
def test_both_validators_reject(event: Any) -> None:
    assert (fast_accepts(event), full_accepts(event)) == (False, False)


@pytest.mark.parametrize("event", GOOD, ids=short)
def test_both_validators_accept(event: Any) -> None:
    assert (fast_accepts(event), full_accepts(event)) == (True, True)


def test_both_validators_accept_generated_events() -> None:
    events = generate_events(GenerateConfig(sessions=4, predictions_per_session=3))
    assert {e["type"] for e in events} >= {"prediction", "edit"}
    for event in events:
        assert (fast_accepts(event), full_accepts(event)) == (True, True), event


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**32 + 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=2), inner,
                                                                max_size=2),
    max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(rng=json_values | st.lists(json_values, min_size=1, max_size=3))
def test_validators_agree_on_any_editable_range(rng: Any) -> None:
    event = prediction(editable_range=rng)
    assert fast_accepts(event) == full_accepts(event)


def test_draft07_translation_of_tuples() -> None:
    tr = schemas._as_draft07
    assert tr({"prefixItems": [{"type": "string"}], "items": False}) == {
        "items": [{"type": "string"}], "additionalItems": False}
    # a property *named* prefixItems and data values are left alone
    s = {"properties": {"prefixItems": {"type": "string"}}, "const": {"prefixItems": 1}}
    assert tr(s) == s
    # the 2020-12 `items` beyond the prefix constrains only the extra elements
    fast = fastjsonschema.compile(tr({"type": "array", "prefixItems": [{"type": "string"}],
                                      "items": {"type": "integer"}}))
    assert fast(["a", 1, 2]) == ["a", 1, 2]
    with pytest.raises(fastjsonschema.JsonSchemaException):
        fast(["a", "b"])
    with pytest.raises(fastjsonschema.JsonSchemaException):
        fast([1])


# ------------------------------------------------------- the fast path against the full one


def verdict(validate: Any, event: Any) -> str:
    """'ok', or the rejection's message: what ingest and the gateway put in a dead letter."""
    try:
        validate(event)
    except fastjsonschema.JsonSchemaException as exc:
        return str(exc.message)
    return "ok"


mutations = st.dictionaries(
    st.sampled_from(["v", "type", "session_id", "ts_ms", "can_collect_data", "path", "start",
                     "end", "text", "predicted", "request_id", "outcome", "was_shown", "op",
                     "watermark_ms", "cursor", "editable_range", "history", "excerpt"]),
    json_values | st.sampled_from(["edit", "prediction", "outcome", "settled", "control"]),
    max_size=3)


@settings(max_examples=400, deadline=None)
@given(base=st.sampled_from(GOOD + BAD[-6:-3]), changes=mutations)
def test_validation_gives_the_full_validators_verdict_and_message(
        base: dict[str, Any], changes: dict[str, Any]) -> None:
    event = {**base, **changes}
    full = schemas.compiled_edit_event_validator()
    assert verdict(schemas.validate_edit_event, event) == verdict(full, event)


@pytest.mark.parametrize("event", BAD + GOOD, ids=short)
def test_validation_agrees_with_the_full_validator_on_the_fixed_cases(event: Any) -> None:
    full = schemas.compiled_edit_event_validator()
    assert verdict(schemas.validate_edit_event, event) == verdict(full, event)


# ----------------------------------------------------------------------------- model-retry


def test_model_retry_records_validate_and_their_payload_must_fit_the_stage() -> None:
    from streams.retry import retry_record
    from streams.settings import Settings
    from streams.settle import SettleMachine
    from tests.streams.test_settle import apply_all, outcome_ev, pred

    machine = SettleMachine()
    apply_all(machine, [pred(), outcome_ev("r1", 2)])
    example = {**machine.flush().settled[0], "pipeline_version": "t"}
    settings = Settings(retry_attempts=3)
    rec = retry_record("sample", example, "student_timeout", 1, 1_000, settings)
    assert rec is not None
    assert schemas.errors("model-retry", rec) == []
    # a settled example is not what the distill stage is given (a scored example)
    assert schemas.errors("model-retry", {**rec, "stage": "distill"}) != []
    assert schemas.errors("model-retry", {**rec, "attempt": 0}) != []
    assert schemas.errors("model-retry", {k: v for k, v in rec.items() if k != "payload"}) != []


# ----------------------------------------------------------------------------- typed records


def required_keys(typed: Any) -> set[str]:
    """The TypedDict's required keys. Not ``__required_keys__``: under ``from __future__
    import annotations`` Python 3.11 leaves ``NotRequired`` in the strings and counts all."""
    hints = get_type_hints(typed, include_extras=True)
    return {k for k, t in hints.items() if get_origin(t) is not NotRequired}


def _schema_part(topic: str, *path: str) -> dict[str, Any]:
    part = from_file(topic)
    for key in path:
        part = part["properties"][key]
    return part["items"] if part.get("type") == "array" else part


# (TypedDict, topic): the TypedDict is the whole record, so its keys are the schema's properties
TOP_LEVEL = [
    (records.SettledExample, "settled-examples"),
    (records.StudentSamples, "student-samples"),
    (records.ScoredExample, "scored-examples"),
    (records.RepairRequest, "repair"),
    (records.TrainingRecord, "training-records"),
    (records.RejectedExample, "rejected-examples"),
    (records.ModelRetry, "model-retry"),
]
# a property every producer writes but the schema leaves open (additionalProperties)
UNLISTED = {
    # carried over from the prediction event (the contract: "the prediction's fields, plus")
    "SettledExample": {"can_collect_data"},
}


@pytest.mark.parametrize("typed, topic", TOP_LEVEL, ids=lambda x: getattr(x, "__name__", x))
def test_record_typeddicts_match_their_schema(typed: Any, topic: str) -> None:
    schema = from_file(topic)
    keys = set(typed.__annotations__)
    assert keys - UNLISTED.get(typed.__name__, set()) == set(schema["properties"])
    # the schema's required keys are required in the type (the type may require more: what
    # this version always writes, while the schema also accepts older records)
    assert set(schema["required"]) <= required_keys(typed)


# nested objects: the schema may describe fewer fields than the type (it binds only those)
NESTED = [
    (records.StudentInfo, "student-samples", ("student",)),
    (records.StudentInfo, "scored-examples", ("student",)),
    (records.StudentInfo, "repair", ("student",)),
    (records.Summary, "scored-examples", ("summary",)),
    (records.Summary, "repair", ("summary",)),
    (records.Judgement, "repair", ("judgement",)),
    (records.LlmVerdict, "repair", ("judgement", "llm")),
]


@pytest.mark.parametrize("typed, topic, path", NESTED,
                         ids=lambda x: getattr(x, "__name__", str(x)))
def test_nested_typeddicts_cover_their_schema(typed: Any, topic: str,
                                              path: tuple[str, ...]) -> None:
    part = _schema_part(topic, *path)
    assert set(part["properties"]) <= set(typed.__annotations__)
    assert set(part.get("required", [])) <= required_keys(typed)


def test_history_entry_matches_the_edit_event_schema() -> None:
    entry = from_file("edit-events")["$defs"]["history_entry"]
    assert set(entry["properties"]) == set(records.HistoryEntry.__annotations__)
    assert set(entry["required"]) == required_keys(records.HistoryEntry)


# ------------------------------------------------------------------ the jsonschema-rs path

EDGE_VALUES = [None, True, False, 0, 1, -1, 1.0, 0.5, 2**32 - 1, 2**32, 2**53 - 1, 2**53, "",
               "x", "x" * 128, "x" * 129, "x" * 256, "x" * 257, "é" * 128, "accepted",
               "ignored", "edit", [], {}]
SURE_BASES = [
    {"v": 1, "type": "edit", "session_id": "s", "ts_ms": 1, "can_collect_data": True,
     "path": "a.py", "start": 0, "end": 1, "text": "x", "predicted": False},
    {"v": 1, "type": "outcome", "session_id": "s", "ts_ms": 1, "can_collect_data": True,
     "request_id": "r", "outcome": "accepted", "was_shown": True},
    {"v": 1, "type": "settled", "session_id": "s", "ts_ms": 1, "can_collect_data": True,
     "request_id": "r", "settled_region": "x"},
    {"v": 1, "type": "prediction", "session_id": "s", "ts_ms": 1, "can_collect_data": True,
     "request_id": "r", "path": "a.py", "in_open_source_repo": True, "excerpt": "abc",
     "excerpt_start": 0, "cursor": 1, "editable_range": [0, 2], "repo_url": None,
     "revision": "x", "model_version": None, "output": "y",
     "history": [{"path": "a.py", "diff": "", "predicted": False, "ts_ms": 1}]},
]
SURE_FIELDS = ["v", "session_id", "ts_ms", "can_collect_data", "path", "start", "end", "text",
               "predicted", "request_id", "outcome", "was_shown", "settled_region",
               "in_open_source_repo", "excerpt", "excerpt_start", "cursor", "editable_range",
               "history", "repo_url", "revision", "model_version", "output"]
# prediction parts: ranges and history entries of every shape
EDGE_VALUES += [[0, 1], [1.0, 2], [0], [0, 1, 2], [True, 1], [0, 2**32], [-1, 0],
                [{"path": "p", "diff": "", "predicted": True, "ts_ms": 0}],
                [{"path": "p", "diff": "", "predicted": True, "ts_ms": 2**60}],
                [{"path": "", "diff": "", "predicted": True, "ts_ms": 0}],
                [{"path": "p", "diff": 1, "predicted": True, "ts_ms": 0}],
                [{"path": "p", "diff": "", "predicted": 1, "ts_ms": 0}],
                [{"path": "p", "diff": "", "predicted": True, "ts_ms": -1}],
                [{"path": "p", "diff": "", "predicted": True, "ts_ms": 1.0}],
                [{"path": "p", "diff": "", "predicted": True}], ["x"], "x" * 2048,
                "x" * 2049, "x" * 4096, "x" * 4097]


@settings(max_examples=600, deadline=None)
@given(base=st.sampled_from(SURE_BASES),
       changes=st.dictionaries(st.sampled_from(SURE_FIELDS),
                               st.sampled_from(EDGE_VALUES) | json_values, max_size=3),
       dropped=st.sets(st.sampled_from(SURE_FIELDS), max_size=2))
def test_the_fast_path_never_accepts_what_the_schema_refuses(
        base: dict[str, Any], changes: dict[str, Any], dropped: set[str]) -> None:
    event = {k: v for k, v in {**base, **changes}.items() if k not in dropped}
    full = schemas.compiled_edit_event_validator()
    if schemas._fast_accepts(event):
        assert verdict(full, event) == "ok"
    assert verdict(schemas.validate_edit_event, event) == verdict(full, event)


def test_the_fast_path_accepts_generated_events() -> None:
    """It takes the common case (else it saves nothing) and the schema agrees."""
    events = generate_events(GenerateConfig(seed=5, sessions=20))
    full = schemas.compiled_edit_event_validator()
    assert len(events) > 500
    for e in events:
        assert schemas._fast_accepts(e), e["type"]
        assert verdict(full, e) == "ok"


def test_the_fast_path_reads_only_json_shaped_events() -> None:
    """A key that is not a string (jsonschema-rs raises on it) goes to the compiled path."""
    event = {**SURE_BASES[0], 1: "x"}
    assert not schemas._fast_accepts(event)
    full = schemas.compiled_edit_event_validator()
    assert verdict(schemas.validate_edit_event, event) == verdict(full, event)


def test_the_fast_path_on_every_single_field_edge_case() -> None:
    """Each field of each vouched-for type set to each edge value, or left out."""
    full = schemas.compiled_edit_event_validator()
    vouched = 0
    for base in SURE_BASES:
        for field in SURE_FIELDS:
            variants = [{**base, field: value} for value in EDGE_VALUES]
            variants.append({k: v for k, v in base.items() if k != field})
            for event in variants:
                if schemas._fast_accepts(event):
                    vouched += 1
                    assert verdict(full, event) == "ok", event
                assert verdict(schemas.validate_edit_event, event) == verdict(full, event)
    assert vouched > 50
