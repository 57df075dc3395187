"""Ingest: privacy first, then schema; every rejection has a reason."""

from __future__ import annotations

import orjson
import pytest

from streams.ingest import Accepted, Discarded, Rejected, decode_event
from streams.privacy import path_disabled, privacy_verdict
from streams.settings import DEFAULT_DISABLED_GLOBS, Settings

S = Settings()


def edit(**kw: object) -> dict[str, object]:
    ev: dict[str, object] = {"v": 1, "type": "edit", "session_id": "s1", "ts_ms": 5,
                             "can_collect_data": True, "path": "src/a.py", "start": 0,
                             "end": 1, "text": "x", "predicted": False}
    ev.update(kw)
    return ev


def test_valid_edit_is_accepted() -> None:
    v = decode_event(orjson.dumps(edit()), S)
    assert isinstance(v, Accepted) and v.event["text"] == "x"


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "invalid_json"),
    (b'{"a": "\xff\xfe"}', "invalid_utf8"),
    (b"[1, 2]", "schema"),
    (orjson.dumps(edit(start="zero")), "schema"),
    (orjson.dumps(edit(type="teleport")), "schema"),
    (orjson.dumps(edit(v=2)), "schema"),
    (orjson.dumps(edit(session_id="")), "schema"),
    (orjson.dumps({k: v for k, v in edit().items() if k != "text"}), "schema"),
])
def test_bad_input_is_rejected_with_reason(raw: bytes, reason: str) -> None:
    v = decode_event(raw, S)
    assert isinstance(v, Rejected), v
    assert v.reason == reason and v.detail


def test_too_large() -> None:
    v = decode_event(orjson.dumps(edit(text="x" * 2000)), S.replace(max_event_bytes=1000))
    assert isinstance(v, Rejected) and v.reason == "too_large"


def test_schema_detail_names_the_field() -> None:
    v = decode_event(orjson.dumps(edit(end=-3)), S)
    assert isinstance(v, Rejected) and "end" in v.detail


@pytest.mark.parametrize(("event", "reason"), [
    (edit(can_collect_data=False), "no_consent"),
    (edit(can_collect_data="yes"), "no_consent"),
    (edit(path="config/.env.local"), "disabled_path"),
    (edit(path=".env"), "disabled_path"),
    (edit(path="certs/server.PEM"), "disabled_path"),
    (edit(path="home/u/.ssh/id_rsa"), "disabled_path"),
    (edit(path="app/my_secret_store.py"), "disabled_path"),
])
def test_privacy_discards_before_anything_else(event: dict[str, object], reason: str) -> None:
    v = decode_event(orjson.dumps(event), S)
    assert v == Discarded(reason)


def test_opted_out_and_malformed_is_discarded_not_dead_lettered() -> None:
    # would fail the schema, but its content must not reach the DLQ
    v = decode_event(orjson.dumps(edit(can_collect_data=False, start="bad")), S)
    assert v == Discarded("no_consent")


def test_closed_source_predictions_are_discarded_when_required() -> None:
    pred = {"v": 1, "type": "prediction", "session_id": "s", "ts_ms": 1,
            "can_collect_data": True, "in_open_source_repo": False, "path": "a.py"}
    assert privacy_verdict(pred, DEFAULT_DISABLED_GLOBS, require_open_source=True) == (
        "not_open_source")
    assert privacy_verdict(pred, DEFAULT_DISABLED_GLOBS, require_open_source=False) is None


def test_history_on_a_disabled_path_is_discarded() -> None:
    pred = {"can_collect_data": True, "type": "prediction", "in_open_source_repo": True,
            "path": "a.py", "history": [{"path": "deploy/prod.key", "diff": ""}]}
    assert privacy_verdict(pred, DEFAULT_DISABLED_GLOBS, require_open_source=True) == (
        "disabled_path")


@pytest.mark.parametrize(("path", "disabled"), [
    ("src/main.py", False), ("envs/x.py", False), ("keys.py", False), ("a.key", True),
    ("deep/er/.envrc", True), ("x/id_rsa.pub", True), ("Secrets.yaml", True),
])
def test_glob_semantics(path: str, disabled: bool) -> None:
    assert path_disabled(path, DEFAULT_DISABLED_GLOBS) is disabled


def test_control_events_bypass_privacy_but_not_the_schema() -> None:
    tick = {"v": 1, "type": "control", "op": "tick", "session_id": "__control__",
            "ts_ms": 5, "can_collect_data": False, "watermark_ms": 5}
    assert isinstance(decode_event(orjson.dumps(tick), S), Accepted)
    bad = {k: v for k, v in tick.items() if k != "watermark_ms"}
    assert isinstance(decode_event(orjson.dumps(bad), S), Rejected)


def test_zero_length_value_is_empty_like_a_tombstone() -> None:
    for raw in (None, b""):
        verdict = decode_event(raw, Settings())
        assert isinstance(verdict, Rejected) and verdict.reason == "empty"
