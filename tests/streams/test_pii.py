"""Personal data masking: addresses and home-path user names, same UTF-8 length."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.pii import mask_event, mask_text, may_hold_pii


@pytest.mark.parametrize(("text", "masked"), [
    ("mail ana.lima+dev@corp.example.com now", "mail xxx.xxxx+xxx@xxxx.xxxxxxx.xxx now"),
    ("Author: José <josé@exämple.de>", "Author: José <xxxxx@xxxxxxxx.xx>"),
    ("open /home/alice/.bashrc", "open /home/xxxxx/.bashrc"),
    ("/Users/Bob/Library/x", "/Users/xxx/Library/x"),
    (r"C:\Users\carol\AppData", r"C:\Users\xxxxx\AppData"),
    ("C:/Users/dave/src", "C:/Users/xxxx/src"),
    # not personal data
    ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
    ("icon@2x.png and logo@3x.webp", "icon@2x.png and logo@3x.webp"),
    ("@property\ndef f(): ...", "@property\ndef f(): ..."),
    ('"@types/node": "^20"', '"@types/node": "^20"'),
    ("pkg@1.2.3", "pkg@1.2.3"),
    ("/Users/Shared/data and /home/", "/Users/Shared/data and /home/"),
])
def test_mask_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked
    assert len(mask_text(text).encode()) == len(text.encode())


@given(st.text(alphabet=st.sampled_from("ab.@-_/é\\ xyzHomeUsrC:") , max_size=60))
def test_masking_keeps_byte_length_and_is_idempotent(text: str) -> None:
    once = mask_text(text)
    assert len(once.encode()) == len(text.encode())
    assert mask_text(once) == once


def test_mask_event_leaves_identifiers_and_returns_same_object_when_clean() -> None:
    clean = {"session_id": "a@b.co", "request_id": "x@y.io", "excerpt": "x = 1"}
    assert mask_event(clean) is clean
    ev = {"session_id": "s", "excerpt": "to: bo@ex.com", "repo_url": "git@github.com:a/b",
          "history": [{"diff": "+/home/eve/x", "ts_ms": 1}]}
    out = mask_event(ev)
    assert out["excerpt"] == "to: xx@xx.xxx"
    assert out["history"][0]["diff"] == "+/home/xxx/x"
    assert out["repo_url"] == ev["repo_url"] and ev["excerpt"] == "to: bo@ex.com"


@given(st.text(alphabet=st.sampled_from("ab.@-_/é\\ xyzHomeUsrC:\"\n"), max_size=60))
def test_may_hold_pii_is_true_whenever_masking_changes_the_event(text: str) -> None:
    # ingest skips mask_event when may_hold_pii says no: that must never skip a change
    ev = {"type": "edit", "text": text, "history": [{"diff": text}]}
    if mask_event(ev) is not ev:
        assert may_hold_pii(orjson.dumps(ev))
    for clean in ("x = 1", "path/to/file.py", "é\n"):
        assert not may_hold_pii(orjson.dumps({"text": clean}))
