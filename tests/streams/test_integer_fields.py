"""Integer fields hold Python ints after ingest, in the worker and in the gateway alike.

JSON Schema counts `3.0` as an integer and orjson decodes it (and `1e1`, and integers beyond
64 bits) as a float, which cannot index bytes. Both `streams.ingest.decode_event` and
`streams.gateway_core.judge` reject such events with the `schema` reason, and never raise.
The integer fields are derived from `schemas/edit-events.v1.json`, so a field added there is
tested here without editing this file.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from streams.gateway_core import judge
from streams.ingest import Accepted, Rejected, decode_event, float_in_integer_field
from streams.settings import Settings

S = Settings()
SCHEMA = schemas.load("edit-events")
KINDS = tuple(SCHEMA["properties"]["type"]["enum"])
Path = tuple[str | int, ...]

BASE: dict[str, dict[str, Any]] = {
    "prediction": {"request_id": "r1", "path": "src/app.py", "in_open_source_repo": True,
                   "excerpt": "héllo = 1\n", "excerpt_start": 7, "cursor": 3,
                   "editable_range": [0, 11],
                   "history": [{"path": "src/b.py", "diff": "", "predicted": False,
                                "ts_ms": 4}]},
    "edit": {"path": "src/app.py", "start": 2, "end": 4, "text": "x", "predicted": False},
    "settled": {"request_id": "r1", "settled_region": "x = 1\n"},
    "outcome": {"request_id": "r1", "outcome": "accepted", "was_shown": True},
    "control": {"op": "tick", "watermark_ms": 9, "session_id": "__control__"},
}


def base(kind: str) -> dict[str, Any]:
    ev = {"v": 1, "type": kind, "session_id": "s1", "ts_ms": 5, "can_collect_data": True}
    return {**ev, **copy.deepcopy(BASE[kind])}


# ------------------------------------------------------------------ the schema's integers


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), ref
        node = SCHEMA["$defs"][ref.removeprefix("#/$defs/")]
    return node


def _integers(node: dict[str, Any], path: Path) -> Iterator[Path]:
    node = _resolve(node)
    types = node.get("type")
    if types == "integer" or (isinstance(types, list) and "integer" in types):
        yield path
    for name, sub in node.get("properties", {}).items():
        yield from _integers(sub, (*path, name))
    for i, sub in enumerate(node.get("prefixItems", [])):
        yield from _integers(sub, (*path, i))
    if isinstance(node.get("items"), dict):
        yield from _integers(node["items"], (*path, "*"))
    for key in ("then", "else"):
        if isinstance(node.get(key), dict):
            yield from _integers(node[key], path)


def integer_paths(kind: str) -> list[Path]:
    """Every path that the schema types as integer in an event of `kind` (`*`: each item)."""
    found = list(_integers({"properties": SCHEMA["properties"]}, ()))
    for branch in SCHEMA["allOf"]:
        if branch["if"]["properties"]["type"]["const"] == kind:
            found += _integers(branch["then"], ())
    return sorted(set(found), key=str)


CASES = [(kind, path) for kind in KINDS for path in integer_paths(kind)]


def test_schema_integer_fields_are_known() -> None:
    """The list the fast check walks (`float_in_integer_field`), spelled out: when this
    fails, the schema gained an integer field and the check must learn it too."""
    assert {k: integer_paths(k) for k in KINDS} == {
        "prediction": [("cursor",), ("editable_range", 0), ("editable_range", 1),
                       ("excerpt_start",), ("history", "*", "ts_ms"), ("ts_ms",)],
        "edit": [("end",), ("start",), ("ts_ms",)],
        "settled": [("ts_ms",)],
        "outcome": [("ts_ms",)],
        "control": [("ts_ms",), ("watermark_ms",)],
    }


def put(ev: Any, path: Path, value: Any) -> None:
    """Set `path` in `ev` to `value` (at `*`, in every item; the base events have one)."""
    head, rest = path[0], path[1:]
    targets = ev if head == "*" else [None]
    for i, _ in enumerate(targets):
        key = i if head == "*" else head
        if rest:
            put(ev[key], rest, value)
        else:
            ev[key] = value


def get(ev: Any, path: Path) -> list[Any]:
    head, rest = path[0], path[1:]
    items = ev if head == "*" else [ev[head]]
    return [x for item in items for x in (get(item, rest) if rest else [item])]


def raw_with(kind: str, tokens: dict[Path, str]) -> bytes:
    """The base event of `kind` as JSON, with the number at each path spelled as given."""
    ev = base(kind)
    for n, path in enumerate(tokens):
        put(ev, path, f"@@{n}@@")
    raw = orjson.dumps(ev)
    for n, token in enumerate(tokens.values()):
        raw = raw.replace(f'"@@{n}@@"'.encode(), token.encode())
    return raw


def verdicts(raw: bytes) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """(worker decode_event, gateway judge) as (status, reason)."""
    w = decode_event(raw, S)
    worker = ("accepted", None) if isinstance(w, Accepted) else (
        ("rejected" if isinstance(w, Rejected) else "discarded"), w.reason)
    g = judge(orjson.loads(raw), S)
    return worker, (g.status, g.reason)


def gateway_expects(kind: str, reason: str | None) -> tuple[str, str | None]:
    # editors may not send control events: the gateway refuses them before the schema
    if kind == "control":
        return "rejected", "control_not_allowed"
    return ("accepted", None) if reason is None else ("rejected", reason)


@pytest.mark.parametrize("kind", KINDS)
def test_base_events_are_accepted(kind: str) -> None:
    worker, gateway = verdicts(orjson.dumps(base(kind)))
    assert worker == ("accepted", None)
    assert gateway == gateway_expects(kind, None)


@pytest.mark.parametrize(("kind", "path"), CASES, ids=[f"{k}:{'.'.join(map(str, p))}"
                                                         for k, p in CASES])
def test_integer_valued_float_is_rejected_as_schema(kind: str, path: Path) -> None:
    """`N.0` where the base event has N (otherwise valid): rejected as `schema`, naming the
    field, by the worker and the gateway."""
    (n,) = set(get(base(kind), path))
    raw = raw_with(kind, {path: f"{n}.0"})
    worker, gateway = verdicts(raw)
    assert worker == ("rejected", "schema")
    assert gateway == gateway_expects(kind, "schema")
    w = decode_event(raw, S)
    assert isinstance(w, Rejected) and str(path[-1]) in w.detail
    assert "must be an integer" in w.detail
    if kind != "control":
        g = judge(orjson.loads(raw), S)
        assert g.detail == w.detail


@pytest.mark.parametrize("token", ["0.0", "-0.0", "1e1", "2E0", "3.000", "5e-0",
                                   "18446744073709551616", "1e300", "0.5"])
@pytest.mark.parametrize(("kind", "path"), CASES, ids=[f"{k}:{'.'.join(map(str, p))}"
                                                         for k, p in CASES])
def test_every_non_int_spelling_is_schema(kind: str, path: Path, token: str) -> None:
    """Fractions, exponents and integers past 64 bits (which orjson decodes as float), at
    or out of range: always `schema`, never an exception."""
    raw = raw_with(kind, {path: token})
    worker, gateway = verdicts(raw)
    assert worker == ("rejected", "schema")
    assert gateway == gateway_expects(kind, "schema")


def test_ints_within_64_bits_are_still_ints() -> None:
    # the widest integer the contract allows still decodes as int and is accepted
    raw = raw_with("edit", {("ts_ms",): "9007199254740991", ("end",): "4294967295"})
    assert verdicts(raw) == (("accepted", None), ("accepted", None))


# ------------------------------------------------------------------ property


def _number_tokens() -> st.SearchStrategy[str]:
    small = st.integers(0, 20)
    return st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        small.map(str),
        small.map(lambda n: f"{n}.0"),
        small.map(lambda n: f"{n}e0"),
        st.floats().map(lambda x: orjson.dumps(x).decode()),  # nan/inf are written as null
    )


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KINDS), st.data())
def test_random_int_float_substitutions_never_raise(kind: str, data: st.DataObject) -> None:
    """Any mix of ints and floats in the integer fields: a verdict, never an exception; if a
    field decodes to anything but an int the event is rejected as `schema` by both; an
    accepted event's integer fields are all ints."""
    paths = integer_paths(kind)
    chosen = data.draw(st.lists(st.sampled_from(paths), min_size=1, unique=True))
    tokens = {p: data.draw(_number_tokens(), label=str(p)) for p in chosen}
    raw = raw_with(kind, tokens)
    worker, gateway = verdicts(raw)
    if any(type(orjson.loads(t)) is not int for t in tokens.values()):
        assert worker == ("rejected", "schema")
        assert gateway == gateway_expects(kind, "schema")
    w = decode_event(raw, S)
    if isinstance(w, Accepted):
        assert float_in_integer_field(w.event) is None
        assert all(type(x) is int for p in paths for x in get(w.event, p))
    if gateway[0] == "accepted":
        assert worker == gateway
