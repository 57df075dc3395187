"""The gateway's pure core: body decoding with caps, batch splitting, per-event verdicts in
privacy-first order, token auth and the token bucket."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.gateway_core import (
    BodyError,
    TokenAuth,
    TokenBucket,
    decompress,
    judge,
    parse_tokens,
    split_body,
    summarize,
)
from streams.ingest import Accepted, Rejected
from streams.settings import Settings

S = Settings()


def prediction(**kw: Any) -> dict[str, Any]:
    ev = {"v": 1, "type": "prediction", "session_id": "s1", "ts_ms": 5, "can_collect_data": True,
          "request_id": "r1", "path": "src/app.py", "in_open_source_repo": True,
          "excerpt": "héllo = 1\n", "excerpt_start": 0, "cursor": 3,
          "editable_range": [0, 11], "history": []}
    ev.update(kw)
    return ev


# ----------------------------------------------------------------------------- body


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_decompress_round_trip_and_bomb_cap(encoding: str) -> None:
    data = b"[" + b" " * 1000 + b"]"
    pack = gzip.compress if encoding == "gzip" else zstandard.ZstdCompressor().compress
    assert decompress(pack(data), encoding, 2000) == data
    bomb = pack(b"\0" * (64 << 20))  # 64 MiB of zeros, a few KiB compressed
    assert len(bomb) < 100_000
    with pytest.raises(BodyError) as err:
        decompress(bomb, encoding, 4 << 20)
    assert err.value.status == 413


def test_decompress_errors() -> None:
    with pytest.raises(BodyError) as err:
        decompress(b"not gzip", "gzip", 100)
    assert err.value.status == 400
    with pytest.raises(BodyError) as err:
        decompress(gzip.compress(b"x" * 100)[:-12], "gzip", 1000)  # truncated
    assert err.value.status == 400
    frames = zstandard.ZstdCompressor().compress(b"[1]") + zstandard.ZstdCompressor().compress(b" ")
    assert decompress(frames, "zstd", 100) == b"[1] "  # several frames are one body
    for bad in [b"\x28\xb5\x2f\xfd garbage", frames[:-2], frames + b"x"]:
        with pytest.raises(BodyError) as err:
            decompress(bad, "zstd", 100)  # truncated frames must not pass as shorter bodies
        assert err.value.status == 400
    with pytest.raises(BodyError) as err:
        decompress(b"x", "br", 100)
    assert err.value.status == 415
    assert decompress(b"abc", "identity", 3) == b"abc"
    with pytest.raises(BodyError):
        decompress(b"abcd", "", 3)


def test_split_body() -> None:
    assert split_body(b"[1, {}]", "application/json", 2) == [1, {}]
    lines = split_body(b'{"a":1}\n\n  \r\n{bad\n\xff\n', "application/x-ndjson", 5)
    assert lines[0] == {"a": 1}
    assert isinstance(lines[1], Rejected) and lines[1].reason == "invalid_json"
    assert isinstance(lines[2], Rejected) and lines[2].reason == "invalid_utf8"
    for body, media, status in [(b"[1,2,3]", "application/json", 413),
                                (b"1\n2\n3\n", "application/x-ndjson", 413),
                                (b"{}", "application/json", 400),
                                (b"[1,", "application/json", 400),
                                (b"[]", "text/plain", 415)]:
        with pytest.raises(BodyError) as err:
            split_body(body, media, 2)
        assert err.value.status == status


# ----------------------------------------------------------------------------- events


def test_accepts_valid_event_with_key() -> None:
    v = judge(prediction(), S)
    assert v.status == "accepted" and v.key == b"s1"
    assert isinstance(v, Accepted) and orjson.loads(v.value) == prediction()


@pytest.mark.parametrize(("event", "status", "reason"), [
    (prediction(can_collect_data=False), "discarded", "no_consent"),
    (prediction(can_collect_data="yes"), "discarded", "no_consent"),
    (prediction(path="config/.env.local"), "discarded", "disabled_path"),
    (prediction(history=[{"path": "k/id_rsa", "diff": "", "predicted": False, "ts_ms": 0}]),
     "discarded", "disabled_path"),
    (prediction(in_open_source_repo=False), "discarded", "not_open_source"),
    (prediction(excerpt="k = 'AI" + "za" + "Sy" + "A1b2C3d4" * 4 + "E'\n"), "discarded",
     "secret_detected"),
    # privacy first: a malformed opted-out event is discarded, not rejected with content
    (prediction(can_collect_data=False, ts_ms="soon"), "discarded", "no_consent"),
    (prediction(ts_ms="soon", output="sk" + "-" + "Ab1" * 16), "discarded", "secret_detected"),
    ({"v": 1, "type": "control", "op": "flush", "session_id": "x", "ts_ms": 0,
      "can_collect_data": True}, "rejected", "control_not_allowed"),
    (prediction(ts_ms="soon"), "rejected", "schema"),
    ([1, 2], "rejected", "not_an_object"),
    (Rejected("invalid_json", "x"), "rejected", "invalid_json"),
    (prediction(editable_range=[5, 2]), "rejected", "invalid_editable_range"),
    (prediction(editable_range=[0, 99]), "rejected", "invalid_editable_range"),
    (prediction(editable_range=[2, 5]), "rejected", "invalid_editable_range"),  # inside é
    (prediction(cursor=2), "rejected", "invalid_cursor"),
    # element types are the schema's (prefixItems, now enforced by the fast validator too) ...
    (prediction(editable_range=["a", 3]), "rejected", "schema"),
    (prediction(editable_range=[1.5, 3]), "rejected", "schema"),
    (prediction(editable_range=[True, 3]), "rejected", "schema"),
    (prediction(editable_range=[None, None]), "rejected", "schema"),
    # ... and to JSON Schema 1.0 is an integer, but a float cannot index bytes: the ingest's
    # integer check rejects it as `schema` too (tests/streams/test_integer_fields.py)
    (prediction(editable_range=[1.0, 3]), "rejected", "schema"),
    (prediction(cursor=3.0), "rejected", "schema"),
    (prediction(excerpt="x" * 5000, editable_range=[0, 4097], cursor=0), "rejected",
     "region_too_large"),
])
def test_verdicts(event: Any, status: str, reason: str) -> None:
    v = judge(event, S)
    assert (v.status, v.reason) == (status, reason)
    assert not isinstance(v, Accepted)


def test_too_deep_to_write_is_rejected_not_raised() -> None:
    # orjson reads up to 1024 levels but writes at most 254: judged, never a crash
    deep = orjson.dumps(prediction()).replace(
        b'"history":[]', b'"x":' + b"[" * 300 + b"]" * 300 + b',"history":[]')
    v = judge(orjson.loads(deep), S)
    assert (v.status, v.reason) == ("rejected", "too_deep")


def test_region_exactly_at_cap_passes_and_size_limit() -> None:
    ok = prediction(excerpt="x" * 5000, editable_range=[0, 4096], cursor=0)
    assert judge(ok, S).status == "accepted"
    big = prediction(excerpt="x" * 2000)
    assert judge(big, S.replace(max_event_bytes=1000)).reason == "too_large"
    assert judge(prediction(in_open_source_repo=False),
                 S.replace(require_open_source=False)).status == "accepted"


def test_summarize() -> None:
    out = summarize([judge(prediction(), S), judge([], S)])
    assert (out["accepted"], out["rejected"], out["discarded"]) == (1, 1, 0)
    assert out["results"][0] == {"index": 0, "status": "accepted"}
    assert out["results"][1]["reason"] == "not_an_object"


# ----------------------------------------------------------------------------- auth / rate


def test_parse_tokens() -> None:
    assert parse_tokens("zed-prod:" + "a" * 16 + ", zed-dev:" + "b" * 20 + "\n# c\n") == (
        ("zed-prod", "a" * 16), ("zed-dev", "b" * 20))
    for bad in ["noname", "a:short", "bad name:" + "x" * 16, "a:" + "x" * 16 + ",a:" + "y" * 16,
                "a:" + "x" * 16 + ",b:" + "x" * 16]:
        with pytest.raises(ValueError) as err:
            parse_tokens(bad)
        assert "x" * 16 not in str(err.value)  # never echo a token


def test_token_auth() -> None:
    auth = TokenAuth([("a", "t" * 16), ("b", "u" * 20)])
    assert auth.client("Bearer " + "t" * 16) == "a"
    assert auth.client("bearer   " + "u" * 20 + " ") == "b"
    for header in [None, "", "Bearer", "Basic " + "t" * 16, "Bearer " + "t" * 15,
                   "Bearer " + "t" * 17, "Bearer \udcff"]:
        assert auth.client(header) is None


def test_token_bucket() -> None:
    b = TokenBucket(rate=10, burst=100, now=0)
    assert b.take(100, 0) == 0
    assert b.take(1, 0) == pytest.approx(0.1)
    assert b.wait(50, 1.0) == pytest.approx(4.0)  # 10 refilled, 40 missing at 10/s
    assert b.take(10, 1.0) == 0
    assert b.take(101, 50) == float("inf")
    b.refund(1000)
    assert b.tokens == 100


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 50)), max_size=40))
def test_bucket_never_exceeds_rate(steps: list[tuple[float, int]]) -> None:
    """Whatever the request pattern, events let through <= burst + rate * elapsed."""
    b = TokenBucket(rate=20, burst=60, now=0)
    now = passed = 0.0
    for dt, n in steps:
        now += dt
        if b.take(n, now) == 0:
            passed += n
        assert passed <= 60 + 20 * now + 1e-6


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(prediction())), JSON_VALUES,
       st.sampled_from(["prediction", "edit", "settled", "outcome", "control", "x"]))
def test_judge_never_raises_on_any_field_value(field: str, value: Any, kind: str) -> None:
    """Whatever an editor puts in any field, the verdict is a verdict, never an exception
    (which the HTTP edge would turn into a 500 for the whole batch)."""
    ev = {**prediction(), "type": kind, field: value}
    v = judge(ev, S)
    assert v.status in ("accepted", "rejected", "discarded")
    assert isinstance(v, Accepted) == (v.status == "accepted")


@settings(max_examples=200, deadline=None)
@given(JSON_VALUES)
def test_judge_never_raises_on_any_json(value: Any) -> None:
    assert judge(value, S).status in ("rejected", "discarded")
