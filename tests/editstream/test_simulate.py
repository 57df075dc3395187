"""The model simulator, over real HTTP: protocol shapes, faults, and its answer model.

The answer-model tests pin behaviour, not exact texts: the student's distance follows the
example (bigger edits are harder), the teacher answers from the ground-truth side file and
errs in each configured way, repairs mostly work.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import Levenshtein

from editstream.simulator.answers import AnswerConfig, revert_edit
from editstream.simulator.server import (
    DESCRIPTION,
    RunningSimulator,
    SimulatorConfig,
    add_arguments,
    config_from_args,
    start_simulator,
)
from streams.formats import (
    JUDGE_SYSTEM,
    REGION_END,
    REGION_START,
    TEACHER_SYSTEM,
    build_prompt,
    judge_user_message,
    parse_output,
    split_excerpt,
    teacher_user_message,
)

NAMES = ("parse_config", "load_items", "total", "buffer", "handle", "request", "user_id", "cache")


def _code_line(rng: random.Random) -> str:
    a, b, c = rng.sample(NAMES, 3)
    return rng.choice(
        (
            f"    {a} = {b}({c}, {rng.randint(0, 99)})",
            f"    if {a} is not None:",
            f"        return {b}.{c}()",
            f"    for {a} in {b}:",
            f"    # {a} then {b}",
            f"    {a}.append({c})",
        )
    )


def make_example(i: int) -> dict[str, Any]:
    """A settled example whose last edit added ``added`` inside the region; then one more line.

    ``added`` is included in the returned dict (not part of the contract) for assertions.
    """
    rng = random.Random(i)
    before = "def f():\n" + "".join(_code_line(rng) + "\n" for _ in range(rng.randint(1, 4)))
    lines = [_code_line(rng) for _ in range(rng.randint(3, 12))]
    after = "".join(_code_line(rng) + "\n" for _ in range(rng.randint(1, 4)))
    old_region = "\n".join(lines) + "\n"
    pos = rng.randrange(1, len(lines))
    added = f"    {rng.choice(NAMES)}_{i} = {rng.choice(NAMES)}({i})"
    lines.insert(pos, added)
    region = "\n".join(lines) + "\n"
    diff = "".join(
        difflib.unified_diff(
            (before + old_region + after).splitlines(True),
            (before + region + after).splitlines(True),
            "a/src/app.py",
            "b/src/app.py",
        )
    )
    start = len(before.encode())
    return {
        "path": "src/app.py",
        "excerpt": before + region + after,
        "editable_range": [start, start + len(region.encode())],
        "cursor": start + len("\n".join(lines[: pos + 1]).encode()),
        "history": [{"path": "src/app.py", "diff": diff, "predicted": False, "ts_ms": 0}],
        "settled_region": region + f"    {rng.choice(NAMES)}.flush()\n",
        "added": added,
    }


def truth_rows(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ground-truth side file for ``examples``, as ``editstream generate`` writes it."""
    rows = []
    for i, ex in enumerate(examples):
        parts = split_excerpt(ex)
        rows.append({"request_id": f"t-{i}", "path": ex["path"], "base_region": parts.region,
                     "cursor_in_region": parts.cursor_in_region,
                     "settled_region": ex["settled_region"]})
    return rows


@pytest.fixture
def truth_file(tmp_path: Any) -> str:
    path = tmp_path / "truth.jsonl"
    rows = truth_rows([make_example(i) for i in range(60)])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


CLEAN = AnswerConfig(student_preamble_rate=0.0, student_garbage_rate=0.0,
                     student_runaway_rate=0.0, student_inline_rate=0.0)


@pytest.fixture
async def sim(truth_file: str) -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(SimulatorConfig(ground_truth=truth_file, answers=CLEAN))
    yield running
    await running.stop()


@pytest.fixture
async def http(sim: RunningSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
        yield client


async def complete(http: httpx.AsyncClient, prompt: str, **fields: Any) -> dict[str, Any]:
    resp = await http.post("/v1/completions", json={"model": "m", "prompt": prompt, **fields})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def chat(http: httpx.AsyncClient, system: str, user: str, seed: int = 0) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    resp = await http.post(
        "/v1/chat/completions", json={"model": "m", "messages": messages, "seed": seed}
    )
    assert resp.status_code == 200, resp.text
    content: str = resp.json()["choices"][0]["message"]["content"]
    return content


# ------------------------------------------------------------------------------------------
# Protocol shapes


async def test_completions_shape(http: httpx.AsyncClient) -> None:
    body = await complete(http, build_prompt(make_example(1)), n=3, seed=4)
    assert body["object"] == "text_completion" and body["model"] == "m"
    assert isinstance(body["id"], str) and isinstance(body["created"], int)
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    for choice in body["choices"]:
        assert choice["finish_reason"] == "stop" and choice["logprobs"] is None
        assert choice["text"].startswith(REGION_START) and choice["text"].endswith(REGION_END)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] == sum(len(c["text"]) // 4 + 1 for c in body["choices"])


async def test_prompt_as_list_of_one_string(http: httpx.AsyncClient) -> None:
    prompt = build_prompt(make_example(1))
    as_str = await complete(http, prompt, seed=1)
    resp = await http.post("/v1/completions", json={"model": "m", "prompt": [prompt], "seed": 1})
    assert resp.json()["choices"] == as_str["choices"]


async def test_fim_prompts_get_a_bare_region(http: httpx.AsyncClient) -> None:
    ex = make_example(2)
    body = await complete(http, build_prompt(ex, "fim"), n=4, temperature=0.0)
    texts = [c["text"] for c in body["choices"]]
    assert all(REGION_START not in t and REGION_END not in t for t in texts)
    assert len(set(texts)) == 1  # temperature 0: one greedy answer, whatever the seed


async def test_stop_and_max_tokens(http: httpx.AsyncClient) -> None:
    prompt = build_prompt(make_example(3))
    stopped = await complete(http, prompt, stop=[REGION_END], temperature=0.0)
    assert REGION_END not in stopped["choices"][0]["text"]
    short = await complete(http, prompt, max_tokens=3)
    assert short["choices"][0]["finish_reason"] == "length"
    assert len(short["choices"][0]["text"]) <= 8


async def test_n_rejected_when_not_accepted() -> None:
    async with (
        await start_simulator(SimulatorConfig(accept_n=False)) as sim,
        httpx.AsyncClient(base_url=sim.url) as http,
    ):
        resp = await http.post("/v1/completions", json={"model": "m", "prompt": "x", "n": 2})
        assert resp.status_code == 400
        assert resp.json()["error"]["param"] == "n"
        assert "n > 1" in resp.json()["error"]["message"]
        ok = await http.post("/v1/completions", json={"model": "m", "prompt": "x", "n": 1})
        assert ok.status_code == 200


async def test_chat_and_messages_shapes(http: httpx.AsyncClient) -> None:
    user = teacher_user_message(make_example(5))
    text = await chat(http, TEACHER_SYSTEM, user)
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    body = {
        "model": "claude-sim",
        "max_tokens": 4096,
        "system": TEACHER_SYSTEM,
        "messages": [{"role": "user", "content": [{"type": "text", "text": user}]}],
    }
    resp = await http.post("/v1/messages", json=body, headers=headers)
    assert resp.status_code == 200
    msg = resp.json()
    assert msg["type"] == "message" and msg["role"] == "assistant"
    assert msg["stop_reason"] == "end_turn" and msg["model"] == "claude-sim"
    assert msg["content"] == [{"type": "text", "text": text}]
    assert msg["usage"]["input_tokens"] > 0 and msg["usage"]["output_tokens"] > 0


async def test_messages_requires_headers_and_answers_errors_in_anthropic_shape(
    http: httpx.AsyncClient,
) -> None:
    body = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    no_key = await http.post("/v1/messages", json=body, headers={"anthropic-version": "x"})
    assert no_key.status_code == 401
    assert no_key.json()["type"] == "error"
    assert no_key.json()["error"]["type"] == "authentication_error"
    no_version = await http.post("/v1/messages", json=body, headers={"x-api-key": "k"})
    assert no_version.status_code == 400
    assert no_version.json()["error"]["type"] == "invalid_request_error"


async def test_models_and_health(http: httpx.AsyncClient) -> None:
    models = (await http.get("/v1/models")).json()
    assert models["object"] == "list" and models["data"][0]["id"] == "editstream-simulator"
    assert (await http.get("/healthz")).json()["status"] == "ok"
    missing = await http.get("/v1/nope")
    assert missing.status_code == 404 and "error" in missing.json()


async def test_answers_depend_on_config_seed_only() -> None:
    prompt = build_prompt(make_example(6))
    texts = []
    for seed in (0, 0, 1):
        async with (
            await start_simulator(SimulatorConfig(seed=seed)) as sim,
            httpx.AsyncClient(base_url=sim.url) as http,
        ):
            body = await complete(http, prompt, n=8, seed=0)
            texts.append([c["text"] for c in body["choices"]])
    assert texts[0] == texts[1] != texts[2]


# ------------------------------------------------------------------------------------------
# Faults and stats


async def test_faults_are_injected_and_counted() -> None:
    config = SimulatorConfig(
        seed=9, drop_rate=0.2, rate_limit_rate=0.2, error_rate=0.2, malformed_rate=0.2,
        retry_after_s=3,
    )  # fmt: skip
    seen: set[str] = set()
    async with await start_simulator(config) as sim:
        async with httpx.AsyncClient(base_url=sim.url) as http:
            for _ in range(60):
                try:
                    resp = await http.post("/v1/completions", json={"model": "m", "prompt": "x"})
                except httpx.RemoteProtocolError:
                    seen.add("drop")
                    continue
                if resp.status_code == 429:
                    assert resp.headers["retry-after"] == "3"
                    seen.add("rate_limit")
                elif resp.status_code == 500:
                    seen.add("error")
                else:
                    try:
                        resp.json()
                        seen.add("none")
                    except ValueError:
                        seen.add("malformed")
        stats = sim.stats
    assert seen == {"drop", "rate_limit", "error", "malformed", "none"}
    assert stats.requests["/v1/completions"] == 60
    assert sum(stats.faults.values()) == 60
    assert set(stats.faults) == seen
    assert stats.as_dict()["requests"] == {"/v1/completions": 60}


async def test_timeout_fault_hangs() -> None:
    config = SimulatorConfig(timeout_rate=1.0, timeout_s=5)
    async with (
        await start_simulator(config) as sim,
        httpx.AsyncClient(base_url=sim.url, timeout=0.2) as http,
    ):
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/completions", json={"model": "m", "prompt": "x"})
        assert sim.stats.faults["timeout"] == 1


async def test_admin_chaos_opens_an_outage_then_the_server_recovers() -> None:
    """`POST /admin/chaos` (chaos runs): 503 with Retry-After for every model request while
    the outage lasts, the same answers as before once it is over."""
    body = {"model": "m", "prompt": "x", "seed": 1}
    async with (
        await start_simulator(SimulatorConfig(admin=True)) as sim,
        httpx.AsyncClient(base_url=sim.url) as http,
    ):
        before = (await http.post("/v1/completions", json=body)).json()["choices"]
        opened = await http.post("/admin/chaos", json={"outage_s": 0.5})
        assert opened.status_code == 200 and opened.json()["outage_s"] > 0.4
        during = await http.post("/v1/completions", json=body)
        chat = await http.post("/v1/chat/completions",
                               json={"model": "m", "messages": [{"role": "user", "content": "q"}]})
        assert (during.status_code, chat.status_code) == (503, 503)
        assert during.headers["retry-after"] == "1"
        await asyncio.sleep(0.6)
        after = await http.post("/v1/completions", json=body)
        assert after.status_code == 200 and after.json()["choices"] == before
        assert sim.stats.faults["outage"] == 2
        assert (await http.post("/admin/chaos", json={"outage_s": -1})).status_code == 400


async def test_admin_chaos_slows_only_the_named_paths() -> None:
    config = SimulatorConfig(admin=True, latency_ms=40)
    chat = {"model": "m", "messages": [{"role": "user", "content": "q"}]}
    async with (
        await start_simulator(config) as sim,
        httpx.AsyncClient(base_url=sim.url) as http,
    ):
        await http.post("/admin/chaos", json={"slow_s": 5, "slow_factor": 10,
                                              "slow_paths": ["/v1/completions"]})
        t0 = time.monotonic()
        assert (await http.post("/v1/completions", json={"model": "m", "prompt": "x"})
                ).status_code == 200
        slow = time.monotonic() - t0
        t0 = time.monotonic()
        assert (await http.post("/v1/chat/completions", json=chat)).status_code == 200
        fast = time.monotonic() - t0
    assert slow >= 0.4 > fast
    assert sim.stats.faults["slow"] == 1


async def test_admin_chaos_is_off_unless_asked() -> None:
    async with (
        await start_simulator(SimulatorConfig()) as sim,
        httpx.AsyncClient(base_url=sim.url) as http,
    ):
        assert (await http.post("/admin/chaos", json={"outage_s": 5})).status_code == 404


# ------------------------------------------------------------------------------------------
# The error model


async def test_student_distance_follows_the_edit_size(truth_file: str) -> None:
    # Same regions, two answer keys: a one-line addition, and a rewrite of every line.
    small = [make_example(i) for i in range(40)]
    big = [{**ex, "settled_region": "".join(f"    rewritten_{k} = {k}\n" for k in range(12))}
           for ex in small]
    means = []
    for examples in (small, big):
        path = truth_file + ".variant"
        with open(path, "w") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in truth_rows(examples)))
        async with (
            await start_simulator(SimulatorConfig(ground_truth=path, answers=CLEAN)) as sim,
            httpx.AsyncClient(base_url=sim.url, timeout=10) as http,
        ):
            dists = []
            for i, ex in enumerate(examples):
                body = await complete(http, build_prompt(ex), n=4, seed=i)
                base = split_excerpt(ex).region
                for choice in body["choices"]:
                    predicted = parse_output(choice["text"], "zeta1", base)
                    assert predicted is not None  # a clean student keeps the format
                    dists.append(Levenshtein.normalized_distance(predicted, ex["settled_region"]))
            means.append(sum(dists) / len(dists))
    assert means[0] < 0.15 < means[1], means  # the bigger edit is the harder example


async def test_student_without_answer_key_echoes_or_fumbles(http: httpx.AsyncClient) -> None:
    ex = {**make_example(999), "path": "unknown.py"}
    body = await complete(http, build_prompt(ex), n=8, seed=1)
    base = split_excerpt(ex).region
    answers = [parse_output(c["text"], "zeta1", base) for c in body["choices"]]
    assert all(a is not None and a != ex["settled_region"] for a in answers)


async def test_teacher_answers_from_the_side_file_not_the_prompt(http: httpx.AsyncClient) -> None:
    outcomes: dict[str, int] = {"settled": 0, "stale": 0, "failed": 0, "other": 0}
    for i in range(60):
        ex = make_example(i)
        user = teacher_user_message(ex)
        assert ex["settled_region"] not in user  # no hindsight in the prompt
        base = split_excerpt(ex).region
        answer = parse_output(await chat(http, TEACHER_SYSTEM, user), "zeta1", base)
        if answer is None:
            outcomes["failed"] += 1
        elif answer == ex["settled_region"]:
            outcomes["settled"] += 1
        elif answer == base:
            outcomes["stale"] += 1
        else:
            outcomes["other"] += 1
    assert outcomes["settled"] >= 35 and outcomes["other"] >= 2, outcomes


@pytest.mark.parametrize("kind", ["stale", "junk", "revert", "truncation", "preamble"])
async def test_teacher_error_kinds(truth_file: str, kind: str) -> None:
    rates = {f"teacher_{k}_rate": 0.0 for k in ("stale", "junk", "revert", "truncation",
                                                 "preamble")}
    config = SimulatorConfig(ground_truth=truth_file,
                             answers=AnswerConfig(**{**rates, f"teacher_{kind}_rate": 1.0}))
    async with (
        await start_simulator(config) as sim,
        httpx.AsyncClient(base_url=sim.url, timeout=10) as http,
    ):
        for i in range(5):
            ex = make_example(i)
            base = split_excerpt(ex).region
            messages = [{"role": "system", "content": TEACHER_SYSTEM},
                        {"role": "user", "content": teacher_user_message(ex)}]
            resp = await http.post("/v1/chat/completions", json={
                "model": "m", "messages": messages, "max_tokens": 2048})
            choice = resp.json()["choices"][0]
            answer = parse_output(choice["message"]["content"], "zeta1", base,
                                  choice["finish_reason"])
            if kind == "stale":
                assert answer == base
            elif kind == "junk":
                assert answer is not None and answer != ex["settled_region"]
                assert Levenshtein.distance(answer, ex["settled_region"]) <= 5
            elif kind == "revert":
                assert answer is not None and ex["added"] not in answer
            elif kind == "truncation":
                assert choice["finish_reason"] == "length" and answer is None
            else:  # chatty, unfenced, but the region reads
                assert answer == ex["settled_region"]


async def test_repair_prompts_mostly_parse(http: httpx.AsyncClient) -> None:
    parsed = correct = 0
    for i in range(40):
        ex = make_example(i)
        base = split_excerpt(ex).region
        user = teacher_user_message(ex, feedback="It reverts the user's edit.", previous="x")
        answer = parse_output(await chat(http, TEACHER_SYSTEM, user), "zeta1", base)
        parsed += answer is not None
        correct += answer == ex["settled_region"]
    assert parsed >= 32 and correct >= 28, (parsed, correct)


async def test_judge_verdicts(http: httpx.AsyncClient) -> None:
    flagged = confident = 0
    for i in range(30):
        ex = make_example(i)
        good = await chat(http, JUDGE_SYSTEM, judge_user_message(ex, ex["settled_region"]))
        assert good == await chat(http, JUDGE_SYSTEM, judge_user_message(ex, ex["settled_region"]))
        verdict = orjson.loads(good)
        assert set(verdict) == {"reasoning", "reverts_edits", "confidence"}
        assert verdict["confidence"] in range(1, 6)
        confident += verdict["confidence"] >= 4 and not verdict["reverts_edits"]
        reverted = ex["settled_region"].replace(ex["added"] + "\n", "")
        flagged += orjson.loads(await chat(http, JUDGE_SYSTEM, judge_user_message(ex, reverted)))[
            "reverts_edits"
        ]
    assert confident >= 18 and flagged >= 24, (confident, flagged)


def test_revert_edit() -> None:
    diff = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
    assert revert_edit("a\nB\nc\nd", diff) == "a\nb\nc\nd"  # whole hunk found
    assert revert_edit("B\nc\nd", diff) == "b\nc\nd"  # only part of it in the text
    assert revert_edit("x\ny", diff) is None  # nothing of the edit is there


# ------------------------------------------------------------------------------------------
# Bad input never causes a 5xx

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


# Bodies with a valid model, so validation of the other fields is reached too.
FIELDS = st.fixed_dictionaries(
    {"model": st.just("m")},
    optional={
        "prompt": st.just("p") | JSON,
        "n": st.integers(-2, 200) | JSON,
        "seed": st.integers() | JSON,
        "temperature": st.floats(-1, 3) | JSON,
        "max_tokens": st.integers(-2, 50) | JSON,
        "stop": st.lists(st.text(max_size=3), max_size=5) | JSON,
        "messages": st.just([{"role": "user", "content": "hi"}]) | JSON,
        "system": st.text(max_size=5) | JSON,
    },
)
# stdlib json encodes what orjson refuses (ints beyond 64 bits, Infinity): good bad input.
BODIES = st.binary(max_size=64) | JSON.map(_encode) | FIELDS.map(_encode)
PATHS = st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/messages"])


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=PATHS, body=BODIES)
async def test_bad_input_gets_4xx_not_5xx(http: httpx.AsyncClient, path: str, body: bytes) -> None:
    headers = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    resp = await http.post(path, content=body, headers=headers)
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        err = resp.json()
        assert "error" in err and err["error"]["message"]


# ------------------------------------------------------------------------------------------
# CLI arguments


def test_cli_flags_cover_every_field() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "SIMULATOR" in parser.format_help() and "not a model" in DESCRIPTION
    ns = parser.parse_args(
        ["--seed", "3", "--no-accept-n", "--drop-rate", "0.1", "--latency-ms", "5", "--port", "0"]
    )
    config = config_from_args(ns)
    assert config == SimulatorConfig(seed=3, accept_n=False, drop_rate=0.1, latency_ms=5)
    assert (ns.host, ns.port) == ("127.0.0.1", 0)
    assert config_from_args(parser.parse_args([])) == SimulatorConfig()
    # the answer model's flags land in the nested AnswerConfig, seeded by the one --seed
    nested = config_from_args(parser.parse_args(["--seed", "4", "--teacher-junk-rate", "0.5"]))
    assert nested.answers == AnswerConfig(teacher_junk_rate=0.5)
    assert nested.answer_model() == AnswerConfig(seed=4, teacher_junk_rate=0.5)
    with pytest.raises(ValueError, match="teacher error rates"):
        config_from_args(parser.parse_args(["--teacher-junk-rate", "0.6",
                                            "--teacher-stale-rate", "0.6"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--error-rate", "1.5"])
    with pytest.raises(ValueError):  # each rate is fine, their sum is not
        config_from_args(parser.parse_args(["--error-rate", "0.6", "--drop-rate", "0.6"]))


async def test_reuse_port_lets_several_simulators_share_a_port() -> None:
    async with await start_simulator(SimulatorConfig(), reuse_port=True) as first:
        with pytest.raises(OSError):  # without the flag a second bind is refused
            await start_simulator(SimulatorConfig(), port=first.port)
        async with (
            await start_simulator(SimulatorConfig(), port=first.port, reuse_port=True) as second,
            httpx.AsyncClient(base_url=first.url) as http,
        ):
            assert second.port == first.port
            body = {"model": "m", "prompt": "x", "n": 3, "seed": 7}
            answers = [(await http.post("/v1/completions", json=body)).json()["choices"]
                       for _ in range(4)]
            assert all(a == answers[0] for a in answers)
