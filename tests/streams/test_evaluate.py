"""The eval records' pure core (streams/evaluate.py): baselines, candidates, failures, the
live scorecard record, which examples are evaluated, and the candidates' settings."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, cast

import pytest

import schemas
from schemas.records import SettledExample
from streams import settings as settings_mod
from streams.evaluate import (
    candidate_record,
    effective_metrics,
    error_failure,
    failed_record,
    noop_record,
    score,
    scorecard_record,
    selected,
    served_record,
)
from streams.models import ModelError, SampleBatch
from streams.settings import Candidate, Settings, candidate_list

S = Settings()
HISTORY = [{"path": "src/a.py", "predicted": False, "ts_ms": 1,
            "diff": "--- a/src/a.py\n+++ b/src/a.py\n@@ -1,2 +1,2 @@\n a = 1\n-b = 0\n+b = 2\n"}]


def example(**kw: Any) -> SettledExample:
    ex: dict[str, Any] = {
        "v": 1, "pipeline_version": "v1", "session_id": "s", "ts_ms": 1,
        "can_collect_data": True, "request_id": "r1", "path": "src/a.py",
        "in_open_source_repo": True, "repo_url": "https://github.com/x/y", "revision": "ab",
        "excerpt": "a = 1\nb = 2\n", "excerpt_start": 0, "cursor": 6,
        "editable_range": [6, 12], "history": HISTORY, "model_version": "m-7",
        "output": "b = 22\n", "settle_reason": "quiescence", "settled_at_ms": 11_000,
        "base_region": "b = 2\n", "settled_region": "b = 22\n", "touching_edits": 1,
        "outcome": "accepted", "was_shown": True}
    ex.update(kw)
    return cast(SettledExample, ex)


def valid(topic: str, record: Any) -> None:
    assert schemas.errors(topic, record) == []


class Fixed:
    """A `streams.models.Student` that answers one text (what the model said), recording
    the request."""

    def __init__(self, text: str, finish: str = "stop") -> None:
        self.text, self.finish = text, finish
        self.asked: list[dict[str, Any]] = []

    async def sample(self, prompt: str, n: int, *, temperature: float = 0.8,
                     max_tokens: int = 1024, seed: int | None = 0,
                     stop: list[str] | None = None) -> SampleBatch:
        self.asked.append({"prompt": prompt, "n": n, "temperature": temperature,
                           "max_tokens": max_tokens, "seed": seed, "stop": stop})
        return SampleBatch([self.text], [12.5], "n", 1, 0, 30, 7, finish_reasons=[self.finish])


CAND = Candidate("ckpt", "http://127.0.0.1:1", "ckpt-model", "zeta1", 4096, 4096, 30.0, 4)


def ask(text: str, finish: str = "stop", ex: SettledExample | None = None,
        settings: Settings = S) -> tuple[dict[str, Any], Fixed]:
    client = Fixed(text, finish)
    rec = asyncio.run(candidate_record(ex or example(), CAND, client, settings))
    return cast(dict[str, Any], rec), client


def test_noop_record_scores_the_region_unchanged() -> None:
    rec = noop_record(example(), S)
    valid("eval-results", rec)
    assert rec["candidate"] == "noop" and rec["predicted_region"] == "b = 2\n"
    assert rec["noop"] is True and rec["failure"] is None and rec["unchanged_metrics"] is None
    assert rec["metrics"] == score(example(), "b = 2\n")
    assert rec["metrics"]["exact"] is False and rec["metrics"]["distance"] > 0
    assert rec["language"] == "python" and rec["ts_ms"] == 11_000
    assert rec["served_model_version"] == "m-7" and rec["model"] is None


def test_served_takes_the_region_or_reads_a_raw_answer_alike() -> None:
    plain = served_record(example(), S)
    raw = served_record(example(output="<|editable_region_start|>\nb = 22\n"
                                       "<|editable_region_end|>"), S)
    valid("eval-results", plain)
    assert plain["predicted_region"] == raw["predicted_region"] == "b = 22\n"
    assert plain["metrics"] == raw["metrics"] and plain["metrics"] is not None
    assert plain["metrics"]["exact"] is True and plain["model"] == "m-7"


def test_served_without_output_is_a_failure_scored_as_unchanged() -> None:
    ex = example()
    del ex["output"]
    rec = served_record(ex, S)
    valid("eval-results", rec)
    assert rec["predicted_region"] is None and rec["metrics"] is None and rec["noop"] is None
    assert rec["failure"] is not None and rec["failure"]["reason"] == "no_output"
    assert effective_metrics(rec) == noop_record(ex, S)["metrics"]
    assert scorecard_record(ex, S) is None  # nothing served to score live


def test_scorecard_record_carries_outcome_and_undone() -> None:
    kept = scorecard_record(example(), S)
    assert kept is not None
    valid("scorecard", kept)
    assert kept["candidate"] == "served" and kept["outcome"] == "accepted"
    assert kept["undone"] is False
    # accepted, then the user went back to what was there: undone inside the window
    undone = scorecard_record(example(settled_region="b = 2\n"), S)
    assert undone is not None and undone["undone"] is True
    rejected = scorecard_record(example(outcome="rejected", settled_region="b = 2\n"), S)
    assert rejected is not None and rejected["undone"] is False
    assert rejected["outcome"] == "rejected"
    unknown = scorecard_record(cast(SettledExample, {
        k: v for k, v in example().items() if k != "outcome"}), S)
    assert unknown is not None and unknown["outcome"] is None
    assert schemas.errors("scorecard", noop_record(example(), S)) != []  # not a served one


def test_candidate_is_asked_greedily_once_and_its_answer_read_back() -> None:
    rec, client = ask("<|editable_region_start|>\nb = 22\n<|editable_region_end|>")
    valid("eval-results", rec)
    (req,) = client.asked
    assert req["n"] == 1 and req["temperature"] == 0.0 and req["seed"] is not None
    assert req["stop"] == ["<|editable_region_end|>"] and "b = 2" in req["prompt"]
    assert rec["predicted_region"] == "b = 22\n" and rec["metrics"]["exact"] is True
    assert rec["model"] == "ckpt-model" and rec["candidate"] == "ckpt"
    assert rec["latency_ms"] == 12.5 and rec["finish_reason"] == "stop"
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (30, 7)
    again, client2 = ask("<|editable_region_start|>\nb = 22\n<|editable_region_end|>")
    assert client2.asked == client.asked and again == rec  # the same question, same record
    quiet, _ = ask("<|editable_region_start|>\nb = 22\n<|editable_region_end|>",
                   settings=S.replace(eval_latency=False))
    assert quiet["latency_ms"] is None


@pytest.mark.parametrize(("text", "finish", "reason"), [
    ("I am not sure what you want.", "stop", "unparsable"),
    ("<|editable_region_start|>\nb = 22\nb = 22\nb =", "length", "truncated"),
    ("", "stop", "empty"),
    ("   \n", "length", "empty"),
])
def test_candidate_garbage_is_a_failed_record_with_its_reason(text: str, finish: str,
                                                             reason: str) -> None:
    rec, _ = ask(text, finish)
    valid("eval-results", rec)
    assert rec["predicted_region"] is None and rec["metrics"] is None
    assert rec["failure"]["reason"] == reason
    assert rec["unchanged_metrics"] == noop_record(example(), S)["metrics"]


def test_a_server_failure_is_recorded_with_its_reason() -> None:
    for exc, reason in [(ModelError("retry_budget_exhausted", last_reason="http_500"),
                         "http_error"),
                        (ModelError("retry_budget_exhausted", last_reason="timeout"), "timeout"),
                        (ModelError("http_404", status=404, detail="no such model"),
                         "http_error")]:
        rec = failed_record(example(), CAND, error_failure(exc), S)
        valid("eval-results", rec)
        assert rec["failure"] is not None and rec["failure"]["reason"] == reason
        assert effective_metrics(rec) == score(example(), "b = 2\n")


def test_selected_is_the_eval_split_plus_a_sample_or_everything() -> None:
    exs = [example(request_id=f"r{i}", repo_url=f"https://github.com/x/r{i}")
           for i in range(400)]
    evals = [e for e in exs if selected(e, S)]
    assert 0.05 < len(evals) / len(exs) < 0.3  # eval_fraction 0.15 of the repositories
    assert all(noop_record(e, S)["split"] == "eval" for e in evals)
    more = [e for e in exs if selected(e, S.replace(eval_train_fraction=0.5))]
    assert set(map(id, evals)) < set(map(id, more)) and len(more) > 0.4 * len(exs)
    assert all(selected(e, S.replace(eval_all=True)) for e in exs)


def test_candidates_from_flags_and_json() -> None:
    parser = argparse.ArgumentParser()
    settings_mod.add_arguments(parser)
    ns = parser.parse_args(["--candidate", "a=http://h:1/v1", "--candidate", "b=http://h:2",
                            "--candidate-model", "b=smol", "--candidate-format", "a=fim"])
    s = settings_mod.from_args(ns, environ={
        "EDITSTREAM_CANDIDATES_JSON": '[{"name": "c", "url": "http://h:3", "max_tokens": 64}]'})
    a, b, c = candidate_list(s)
    assert (a.name, a.url, a.model, a.prompt_format) == ("a", "http://h:1/v1", "a", "fim")
    assert (b.model, b.prompt_format, b.max_tokens) == ("smol", "zeta1", 4096)
    assert (c.name, c.max_tokens) == ("c", 64)
    env = settings_mod.from_env({"EDITSTREAM_CANDIDATES": "x=http://h:1,y=http://h:2"})
    assert [c.name for c in candidate_list(env)] == ["x", "y"]


@pytest.mark.parametrize(("kw", "message"), [
    ({"candidates": ("noop=http://h",)}, "taken"),
    ({"candidates": ("a=http://h", "a=http://i")}, "twice"),
    ({"candidates": ("a",)}, "NAME=VALUE"),
    ({"candidates": ("a=http://h",), "candidate_formats": ("a=nope",)}, "prompt format"),
    ({"candidate_models": ("z=m",)}, "no candidate named z"),
    ({"candidates_json": "{"}, "not JSON"),
])
def test_bad_candidates_fail_at_start(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings(**kw)
