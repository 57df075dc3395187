"""Tests for the edit-trace generator.

Why: the settling, privacy and example-building stages are tested against these traces, so
the traces themselves must honour the wire contract exactly (byte offsets on char
boundaries, excerpts that are real slices of the replayed file, real unified diffs) and
must contain every case those stages handle. The checks here are written independently of
the generator's internals: they replay the events over `initial_files` with plain bytes.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from editstream.sessions.generate import (
    SAMPLE_CONFIG,
    GenerateConfig,
    generate_events,
    initial_files,
    stdlib_sources,
    write_jsonl,
)
from editstream.sessions.gitsource import DEFAULT_REPO_URL
from streams.generate import SourceFiles, apply_edit, is_disabled_path, simulate, unified_diff

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample-traces.jsonl"
QUIESCENCE_MS = 10_000
TTL_MS = 300_000

Events = list[dict[str, Any]]

COMMON = {"v": int, "type": str, "session_id": str, "ts_ms": int, "can_collect_data": bool}
REQUIRED = {
    "prediction": {
        "request_id": str,
        "path": str,
        "in_open_source_repo": bool,
        "excerpt": str,
        "excerpt_start": int,
        "cursor": int,
        "editable_range": list,
        "history": list,
    },
    "edit": {"path": str, "start": int, "end": int, "text": str, "predicted": bool},
    "settled": {"request_id": str, "settled_region": str},
    "outcome": {"request_id": str, "outcome": str, "was_shown": bool},
}
OPTIONAL = {"prediction": {"repo_url": str, "revision": str, "model_version": str, "output": str}}
HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")

# The sample's config (real history) plus another history config and the stdlib splicer
# (load tests), so the checks are not tuned to one seed or one mode.
CONFIGS = [
    SAMPLE_CONFIG,
    GenerateConfig(seed=3, sessions=40, predictions_per_session=4),
    GenerateConfig(seed=11, sessions=8, predictions_per_session=10, repos=3, splice=True),
]
_cache: dict[GenerateConfig, tuple[Events, dict[tuple[str, str], str]]] = {}


def _generated(config: GenerateConfig) -> tuple[Events, dict[tuple[str, str], str]]:
    if config not in _cache:
        _cache[config] = (generate_events(config), initial_files(config))
    return _cache[config]


@pytest.fixture(params=CONFIGS, ids=lambda c: f"seed{c.seed}-s{c.sessions}")
def generated(request: pytest.FixtureRequest) -> tuple[Events, dict[tuple[str, str], str]]:
    return _generated(request.param)


@pytest.fixture
def default_events() -> Events:
    return _generated(CONFIGS[0])[0]


def _is_type(value: Any, kind: type) -> bool:
    # bool is an int subclass: an int field must not be a bool and vice versa
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _on_boundary(raw: bytes, offset: int) -> bool:
    try:
        raw[:offset].decode()
        raw[offset:].decode()
    except UnicodeDecodeError:
        return False
    return True


# ---- determinism ------------------------------------------------------------------------------


def test_same_seed_same_events() -> None:
    cfg = GenerateConfig(seed=5, sessions=6)
    assert generate_events(cfg) == generate_events(cfg)
    assert initial_files(cfg) == initial_files(cfg)


def test_different_seed_different_events() -> None:
    a = generate_events(GenerateConfig(seed=5, sessions=6))
    b = generate_events(GenerateConfig(seed=6, sessions=6))
    assert a != b


@pytest.mark.parametrize("splice", [False, True])
def test_session_and_request_ids_follow_the_seed(splice: bool) -> None:
    events = generate_events(GenerateConfig(seed=42, sessions=3, predictions_per_session=2,
                                            splice=splice))
    assert {e["session_id"] for e in events} == {"sess-42-1", "sess-42-2", "sess-42-3"}
    rids = {e["request_id"] for e in events if e["type"] == "prediction"}
    assert all(re.fullmatch(r"req-42-[123]-\d+", r) for r in rids)
    if splice:
        assert len(rids) == 6  # predictions_per_session is exact
    else:  # at most: a small commit has fewer hunks, some without a natural pause point
        assert 0 < len(rids) <= 6 + 3  # + the secret file's typed line


# ---- wire contract ----------------------------------------------------------------------------


def test_fields_and_types(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    assert events
    for e in events:
        assert e["type"] in REQUIRED, e
        spec = {**COMMON, **REQUIRED[e["type"]]}
        optional = OPTIONAL.get(e["type"], {})
        for key, kind in spec.items():
            assert key in e and _is_type(e[key], kind), (key, e)
        for key, kind in optional.items():
            if key in e:
                assert _is_type(e[key], kind), (key, e)
        assert set(e) <= set(spec) | set(optional), set(e) - set(spec) - set(optional)
        assert e["v"] == 1
        assert 1 <= len(e["session_id"]) <= 128
        if e["type"] == "outcome":
            assert e["outcome"] in ("accepted", "rejected", "discarded", "ignored")
        if e["type"] == "prediction":
            assert all(_is_type(x, int) for x in e["editable_range"])
            for h in e["history"]:
                assert set(h) == {"path", "diff", "predicted", "ts_ms"}
                assert _is_type(h["path"], str) and _is_type(h["diff"], str)
                assert _is_type(h["predicted"], bool) and _is_type(h["ts_ms"], int)


def test_events_are_json_round_trippable(default_events: Events) -> None:
    for e in default_events:
        assert json.loads(json.dumps(e, ensure_ascii=False)) == e


def test_time_order(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    ts = [e["ts_ms"] for e in events]
    assert ts == sorted(ts), "sessions are interleaved by ts_ms"
    last: dict[str, int] = {}
    for e in events:
        assert e["ts_ms"] >= last.get(e["session_id"], 0)
        last[e["session_id"]] = e["ts_ms"]
    # sessions really overlap in time (interleaved, not one after another)
    spans = defaultdict(list)
    for e in events:
        spans[e["session_id"]].append(e["ts_ms"])
    firsts = sorted((min(v), max(v)) for v in spans.values())
    if len(spans) >= 8:  # a handful of short sessions may well not overlap
        assert any(b[0] < a[1] for a, b in pairwise(firsts))


def test_request_ids_unique_and_referenced(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    preds = [e for e in events if e["type"] == "prediction"]
    rids = [e["request_id"] for e in preds]
    assert len(rids) == len(set(rids))
    by_rid = {e["request_id"]: e for e in preds}
    outcomes = Counter()
    for e in events:
        if e["type"] in ("outcome", "settled"):
            p = by_rid[e["request_id"]]
            assert p["session_id"] == e["session_id"]
            assert e["ts_ms"] >= p["ts_ms"]
        if e["type"] == "outcome":
            outcomes[e["request_id"]] += 1
            assert 100 <= e["ts_ms"] - by_rid[e["request_id"]]["ts_ms"] <= 2000
            assert e["was_shown"] == (e["outcome"] != "discarded")
    assert max(outcomes.values()) == 1


# ---- consistency with the replayed files ------------------------------------------------------


def _replay(events: Events, initial: dict[tuple[str, str], str]) -> dict[str, Any]:
    """Replay every edit with plain bytes; check each prediction against the live file."""
    files = {k: v.encode() for k, v in initial.items()}
    accepted = {
        e["request_id"] for e in events if e["type"] == "outcome" and e["outcome"] == "accepted"
    }
    last_pred: dict[tuple[str, str], dict[str, Any]] = {}
    checked_accepts = 0
    for e in events:
        if e["type"] not in ("edit", "prediction"):
            continue
        key = (e["session_id"], e["path"])
        assert key in files, f"no initial text for {key}"
        raw = files[key]
        if e["type"] == "edit":
            s, t = e["start"], e["end"]
            assert 0 <= s <= t <= len(raw), e
            assert _on_boundary(raw, s) and _on_boundary(raw, t), e
            files[key] = raw[:s] + e["text"].encode() + raw[t:]
            assert apply_edit(raw.decode(), s, t, e["text"]).encode() == files[key]
            p = last_pred.pop(key, None)
            if e["predicted"]:
                # a predicted edit applies an accepted prediction: region becomes `output`
                assert p is not None and p["request_id"] in accepted, e
                rs = p["excerpt_start"] + p["editable_range"][0]
                out = p["output"].encode()
                assert files[key][rs : rs + len(out)] == out
                checked_accepts += 1
        else:
            x = e["excerpt"].encode()
            xs = e["excerpt_start"]
            assert raw[xs : xs + len(x)] == x, f"excerpt of {e['request_id']} is not the file"
            assert _on_boundary(raw, xs) and _on_boundary(raw, xs + len(x))
            last_pred[key] = e
    return {"files": files, "checked_accepts": checked_accepts}


def test_edits_and_excerpts_replay(generated: tuple[Events, dict[tuple[str, str], str]]) -> None:
    events, initial = generated
    result = _replay(events, initial)
    n_accepted = sum(1 for e in events if e.get("outcome") == "accepted")
    assert result["checked_accepts"] == n_accepted > 0
    # every file is still valid UTF-8 at the end
    for raw in result["files"].values():
        raw.decode()


def test_initial_files_cover_every_path(generated: tuple[Events, Any]) -> None:
    events, initial = generated
    used = {(e["session_id"], e["path"]) for e in events if "path" in e}
    assert used <= set(initial)
    for (_, path), text in initial.items():
        assert not path.startswith("/") and ".." not in path
        if not is_disabled_path(path):
            # a repository-relative path (real history), or src/<pkg>/... (the splicer)
            assert re.fullmatch(r"[\w.\-]+(/[\w.\-]+)*", path), path
            assert text.endswith("\n") or text == ""  # "": a file the commit adds


def test_prediction_geometry(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    for e in (x for x in events if x["type"] == "prediction"):
        raw = e["excerpt"].encode()
        start, end = e["editable_range"]
        assert 0 <= start <= e["cursor"] <= end <= len(raw), e["request_id"]
        for off in (start, end, e["cursor"]):
            assert _on_boundary(raw, off), (e["request_id"], off)
        assert end - start < 4096
        assert e["excerpt"].count("\n") <= 61
        region_lines = raw[start:end].decode().count("\n")
        # 0: the first line of a file the commit adds, typed so far; real hunks need up to
        # 16 lines (the splicer's regions stay under 12)
        assert 0 <= region_lines <= 16
        if "output" in e:
            assert len(e["output"].encode()) < 8192


def test_history_is_real_unified_diffs(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    seen = 0
    for e in (x for x in events if x["type"] == "prediction"):
        assert len(e["history"]) <= 3
        ts = [h["ts_ms"] for h in e["history"]]
        assert ts == sorted(ts) and all(t <= e["ts_ms"] for t in ts)
        for h in e["history"]:
            _check_unified_diff(h["diff"], h["path"])
            seen += 1
    assert seen > 0


def test_sensitive_history_leaks_only_from_the_leaky_client(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    leaks = [
        e
        for e in events
        if e["type"] == "prediction"
        and not is_disabled_path(e["path"])
        and any(is_disabled_path(h["path"]) for h in e["history"])
    ]
    # exactly one session's client lets one sensitive diff through, once
    assert len(leaks) == 1
    sid = leaks[0]["session_id"]
    assert any(
        x.get("path") and is_disabled_path(x["path"]) and x["session_id"] == sid for x in events
    )


def _check_unified_diff(diff: str, path: str) -> None:
    assert diff.endswith("\n")
    lines = diff.split("\n")[:-1]
    assert lines[0] == f"--- a/{path}" and lines[1] == f"+++ b/{path}", lines[:2]
    i, hunks = 2, 0
    while i < len(lines):
        m = HUNK.match(lines[i])
        assert m, f"bad hunk header {lines[i]!r}"
        want_old = int(m[2]) if m[2] is not None else 1
        want_new = int(m[4]) if m[4] is not None else 1
        old = new = 0
        changed = False
        i += 1
        while old < want_old or new < want_new:
            tag = lines[i][:1]
            assert tag in (" ", "-", "+", "\\"), lines[i]
            old += tag in (" ", "-")
            new += tag in (" ", "+")
            changed |= tag in ("-", "+")
            i += 1
        assert old == want_old and new == want_new and changed
        while i < len(lines) and lines[i].startswith("\\ "):
            i += 1
        hunks += 1
    assert hunks >= 1


def test_the_core_simulates_on_files_handed_in() -> None:
    """The pure core reads no disk: the same texts handed in from memory give the same events,
    and other texts give other events."""
    config = GenerateConfig(seed=5, sessions=4, predictions_per_session=3, splice=True)
    disk = stdlib_sources()
    texts = {p: disk.read(p) for p in disk.paths}
    in_memory = SourceFiles(paths=disk.paths, read=texts.__getitem__)
    assert simulate(config, in_memory) == (generate_events(config), initial_files(config))
    one = next(p for p in disk.paths if p.endswith("bisect.py"))
    narrow = SourceFiles(paths=(one,), read=texts.__getitem__)
    events, initial = simulate(config, narrow)
    assert {path.rpartition("/")[2] for (_, path) in initial} <= {
        "bisect.py", ".env.local", "server.pem", "client_secret.json"}
    assert events != generate_events(config)
    with pytest.raises(ValueError, match="no usable"):
        simulate(config, SourceFiles(paths=(), read=texts.__getitem__))


def test_unified_diff_helper() -> None:
    d = unified_diff("src/x.py", "a\nb\nc\n", "a\nB\nc")
    assert d.startswith("--- a/src/x.py\n+++ b/src/x.py\n@@ ")
    assert "\\ No newline at end of file\n" in d
    _check_unified_diff(d, "src/x.py")


def test_apply_edit_rejects_split_chars() -> None:
    assert apply_edit("héllo", 1, 3, "e") == "hello"
    with pytest.raises(ValueError):
        apply_edit("héllo", 2, 3, "")
    with pytest.raises(ValueError):
        apply_edit("abc", 2, 9, "")


# ---- the mix of cases ---------------------------------------------------------------------------


def _settle_reasons(events: Events) -> dict[str, str]:
    """How the server would settle each prediction (an independent re-implementation)."""
    reasons: dict[str, str] = {}
    open_: dict[str, dict[str, Any]] = {}
    for e in events:
        sid, ts = e["session_id"], e["ts_ms"]
        for rid, r in list(open_.items()):
            due = min(r["last"] + QUIESCENCE_MS, r["pred"] + TTL_MS)
            if r["sid"] == sid and ts >= due:
                reasons[rid] = "ttl" if r["pred"] + TTL_MS < r["last"] + QUIESCENCE_MS else "quiet"
                del open_[rid]
        if e["type"] == "prediction":
            xs = e["excerpt_start"]
            open_[e["request_id"]] = {
                "sid": sid,
                "path": e["path"],
                "rs": xs + e["editable_range"][0],
                "re": xs + e["editable_range"][1],
                "xs": xs,
                "xe": xs + len(e["excerpt"].encode()),
                "pred": ts,
                "last": ts,
            }
        elif e["type"] == "settled" and e["request_id"] in open_:
            reasons[e["request_id"]] = "client"
            del open_[e["request_id"]]
        elif e["type"] == "edit":
            s, t, n = e["start"], e["end"], len(e["text"].encode())
            for rid, r in list(open_.items()):
                if r["sid"] != sid or r["path"] != e["path"]:
                    continue
                if s <= r["re"] and t >= r["rs"]:
                    if s < r["xs"] or t > r["xe"]:
                        reasons[rid] = "context_lost"
                        del open_[rid]
                        continue
                    r["rs"], r["re"] = min(r["rs"], s), max(r["re"], t) + n - (t - s)
                    r["last"] = ts
                elif t < r["rs"]:
                    for k in ("rs", "re", "xs", "xe"):
                        r[k] += n - (t - s)
    for rid, r in open_.items():
        reasons[rid] = "ttl" if r["pred"] + TTL_MS < r["last"] + QUIESCENCE_MS else "quiet"
    return reasons


def test_mix_of_outcomes_and_settling(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    outcomes = Counter(e["outcome"] for e in events if e["type"] == "outcome")
    assert set(outcomes) == {"accepted", "rejected", "discarded", "ignored"}, outcomes
    preds = {e["request_id"] for e in events if e["type"] == "prediction"}
    with_outcome = {e["request_id"] for e in events if e["type"] == "outcome"}
    assert preds - with_outcome, "some predictions are followed by nothing"
    assert any(e["type"] == "prediction" and "output" not in e for e in events)
    reasons = Counter(_settle_reasons(events).values())
    assert {"quiet", "ttl", "client", "context_lost"} <= set(reasons), reasons
    assert any(e["type"] == "edit" and e["predicted"] for e in events)
    # pauses: bursts with >10 s gaps exist, as do fast typing bursts
    gaps = Counter()
    last: dict[str, int] = {}
    for e in (x for x in events if x["type"] == "edit"):
        if e["session_id"] in last:
            gap = e["ts_ms"] - last[e["session_id"]]
            gaps["fast" if gap <= 400 else "long" if gap > QUIESCENCE_MS else "mid"] += 1
        last[e["session_id"]] = e["ts_ms"]
    assert gaps["fast"] > gaps["long"] > 0


def test_behaviours_present(default_events: Events) -> None:
    edits = [e for e in default_events if e["type"] == "edit"]
    backspaces = [e for e in edits if e["text"] == "" and len(e["text"]) == 0]
    assert any(e["end"] - e["start"] == 1 for e in backspaces), "typo fixes"
    assert any(e["text"] == "" and e["end"] - e["start"] > 20 for e in edits), "line deletes"
    assert any("\n" in e["text"] and e["end"] > e["start"] for e in edits), "pastes / undos"
    assert any(e["text"].startswith("\n ") and e["text"].strip() == "" for e in edits), "Enter"


def test_privacy_cases(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    sessions = {e["session_id"] for e in events}
    no_collect = {e["session_id"] for e in events if not e["can_collect_data"]}
    assert 0 < len(no_collect) < len(sessions)
    # can_collect_data is a session property
    for sid in no_collect:
        assert all(not e["can_collect_data"] for e in events if e["session_id"] == sid)
    secret = [e for e in events if "path" in e and is_disabled_path(e["path"])]
    assert any(e["type"] == "edit" for e in secret)
    assert any(e["type"] == "prediction" for e in secret)
    preds = [e for e in events if e["type"] == "prediction"]
    closed = [e for e in preds if not e["in_open_source_repo"]]
    assert 0 < len(closed) < len(preds) / 2
    assert all("repo_url" in e and "revision" in e for e in preds if e["in_open_source_repo"])
    assert all(re.fullmatch(r"[0-9a-f]{40}", e["revision"]) for e in preds if "revision" in e)


def test_repos_for_splitting(default_events: Events) -> None:
    # real history names the one real repository (and each session its parent commit)
    assert {e["repo_url"] for e in default_events if "repo_url" in e} == {DEFAULT_REPO_URL}
    # the splicer invents repositories, so splits by repo have something to split
    spliced = generate_events(GenerateConfig(sessions=20, splice=True))
    urls = {e["repo_url"] for e in spliced if "repo_url" in e}
    assert len(urls) == GenerateConfig().repos
    assert all(re.fullmatch(r"https://github\.com/example/repo-\d+", u) for u in urls)


def test_non_ascii_offsets(generated: tuple[Events, Any]) -> None:
    events, _ = generated
    typed = [e for e in events if e["type"] == "edit" and not e["text"].isascii()]
    assert typed, "some sessions type non-ASCII text"
    assert any(len(e["text"].encode()) - len(e["text"]) >= 3 for e in typed)  # 3/4-byte chars
    # and predictions see it, so their byte offsets differ from char offsets
    assert any(
        not e["excerpt"].encode()[: e["editable_range"][1]].decode().isascii()
        for e in events
        if e["type"] == "prediction"
    )


# ---- the committed sample and the writer --------------------------------------------------------


def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    events = generate_events(GenerateConfig(seed=1, sessions=2, predictions_per_session=2))
    out = tmp_path / "nested" / "t.jsonl"
    assert write_jsonl(events, out) == len(events)
    text = out.read_text(encoding="utf-8")
    assert [json.loads(line) for line in text.splitlines()] == events
    assert not list(out.parent.glob(".*.tmp"))
    assert out.stat().st_mode & 0o777 == 0o644


def test_committed_sample_matches_generator(default_events: Events) -> None:
    assert SAMPLE.stat().st_size < 3 * 1024 * 1024
    with SAMPLE.open(encoding="utf-8") as fh:
        sample = [json.loads(line) for line in fh]
    assert sample == default_events, (
        "data/sample-traces.jsonl drifted: regenerate with `python -m editstream.sessions.generate`"
    )
    stats = Counter(e["type"] for e in sample)
    assert stats["prediction"] == 205 and len(sample) < 6000
