"""Ingest: privacy first, then schema; every rejection has a reason."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from streams.gateway_core import judge
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
    (b"[1, 2]", "not_an_object"),
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
    # only the reason and identifiers (for the settle stage), never content
    assert v == Discarded(reason, session_id="s1", path=str(event["path"]))


def test_opted_out_and_malformed_is_discarded_not_dead_lettered() -> None:
    # would fail the schema, but its content must not reach the DLQ
    v = decode_event(orjson.dumps(edit(can_collect_data=False, start="bad")), S)
    assert isinstance(v, Discarded) and v.reason == "no_consent"


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


# ----------------------------------------------------------------------------- one verdict

AWS_KEY = "AKIA" + "Z7QW3RTY5UIO2PAS"  # split: the repository's own scanners stay quiet


def prediction(**kw: object) -> dict[str, object]:
    ev: dict[str, object] = {
        "v": 1, "type": "prediction", "session_id": "s1", "ts_ms": 5,
        "can_collect_data": True, "request_id": "r1", "path": "src/app.py",
        "in_open_source_repo": True, "excerpt": "a = 1\n", "excerpt_start": 0, "cursor": 0,
        "editable_range": [0, 6], "history": []}
    ev.update(kw)
    return ev


@pytest.mark.parametrize("event", [
    prediction(excerpt=f"key = '{AWS_KEY}'\n", editable_range=[0, 0]),
    prediction(output=f"KEY={AWS_KEY}"),
    prediction(history=[{"path": "a.py", "diff": f"+k = '{AWS_KEY}'\n", "predicted": False,
                         "ts_ms": 1}]),
    edit(text=AWS_KEY),
    {"v": 1, "type": "settled", "session_id": "s1", "ts_ms": 9, "can_collect_data": True,
     "request_id": "r1", "settled_region": f"x = '{AWS_KEY}'"},
])
def test_worker_ingest_discards_credentials_like_the_gateway(event: dict[str, object]) -> None:
    # the incident: events written straight to Kafka were never scanned for secrets
    v = decode_event(orjson.dumps(event), S)
    assert isinstance(v, Discarded) and v.reason == "secret_detected"
    assert judge(event, S) == v


def test_a_discarded_prediction_names_its_request_for_the_settle_stage() -> None:
    v = decode_event(orjson.dumps(prediction(can_collect_data=False)), S)
    assert v == Discarded("no_consent", request_id="r1")
    v = decode_event(orjson.dumps(prediction(in_open_source_repo=False)), S)
    assert v == Discarded("not_open_source", request_id="r1")


def test_personal_data_is_masked_in_place_or_discarded_by_policy() -> None:
    text = "# by ana.lima@example.org, see /home/ana/notes.txt\na = 1\n"
    n = len(text.encode())
    ev = prediction(excerpt=text, editable_range=[n - 6, n], path="/home/ana/src/app.py")
    v = decode_event(orjson.dumps(ev), S)
    assert isinstance(v, Accepted)
    masked = v.event["excerpt"]
    assert "ana" not in masked and "example" not in masked
    assert len(masked.encode()) == n and masked.endswith("a = 1\n")  # offsets still hold
    assert v.event["path"] == "/home/xxx/src/app.py"
    assert orjson.loads(v.value) == v.event
    assert decode_event(orjson.dumps(ev), S.replace(pii_policy="discard")) == Discarded(
        "pii_detected", request_id="r1")
    kept = decode_event(orjson.dumps(ev), S.replace(pii_policy="keep"))
    assert isinstance(kept, Accepted) and kept.event == ev


def test_control_events_from_editors_are_refused_but_read_from_the_topic() -> None:
    tick = {"v": 1, "type": "control", "op": "tick", "session_id": "__control__",
            "ts_ms": 5, "can_collect_data": False, "watermark_ms": 5}
    assert isinstance(decode_event(orjson.dumps(tick), S), Accepted)
    assert judge(tick, S).reason == "no_consent"
    assert judge({**tick, "can_collect_data": True}, S).reason == "control_not_allowed"


_json = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
                     | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=3)
                     | st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=8)


@given(base=st.sampled_from([prediction(), edit(), prediction(can_collect_data=False)]),
       key=st.sampled_from(["ts_ms", "path", "excerpt", "text", "editable_range", "cursor",
                            "history", "can_collect_data", "type", "x"]),
       value=_json)
@hyp_settings(max_examples=300, deadline=None)
def test_gateway_and_worker_give_the_same_verdict(base: dict[str, object], key: str,
                                                  value: object) -> None:
    event = {**base, key: value}
    worker = decode_event(orjson.dumps(event), S)
    gateway = judge(event, S)
    if event.get("type") == "control":
        return  # internal to the pipeline: only the worker reads them
    assert gateway == worker
