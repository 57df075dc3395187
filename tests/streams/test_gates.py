"""Target gates: each seeded error kind is caught by its own gate (pure checks, then the
simulator's teacher erring on purpose through the real HTTP client)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agents.models import TeacherClient
from editstream.answers import AnswerConfig
from editstream.simulate import SimulatorConfig, start_simulator
from streams.distill import attempt, route_scored
from streams.formats import split_excerpt
from streams.judge import check_target
from streams.models import Endpoint
from streams.repair import feedback_for
from streams.settings import Settings

S = Settings()
BASE = "def total(items):\n    result = 0\n"
ADDED = "    for item in items:\n"
SETTLED = BASE + ADDED + "        result += item.price\n    return result\n"
DIFF = ("--- a/shop.py\n+++ b/shop.py\n@@ -1,2 +1,3 @@\n def total(items):\n"
        "     result = 0\n+    for item in items:\n")


def example(**kw: Any) -> dict[str, Any]:
    region = BASE + ADDED
    ex = {"request_id": "r-1", "path": "shop.py", "excerpt": "import x\n" + region + "\n",
          "editable_range": [9, 9 + len(region)], "cursor": 9 + len(region), "excerpt_start": 0,
          "history": [{"path": "shop.py", "diff": DIFF, "predicted": False, "ts_ms": 0}],
          "base_region": region, "settled_region": SETTLED}
    ex.update(kw)
    return ex


def reasons(region: str | None, median: float | None = 0.3, **kw: Any) -> list[str]:
    out: list[str] = check_target(example(), region, S, student_median=median, **kw)["reasons"]
    return out


def test_the_settled_region_and_a_partial_edit_pass() -> None:
    assert reasons(SETTLED) == []
    assert reasons(BASE + ADDED + "        result += item.price\n") == []  # on the way


def test_each_error_kind_has_its_gate() -> None:
    assert reasons(None, parse_error="no_region") == ["unparsable"]
    assert reasons(None, parse_error="truncated") == ["target_truncated"]
    assert reasons(BASE + ADDED, median=1.0) == ["noop_target"]  # stale: request-time region
    junk = SETTLED.replace("item.price", "item.price + 1").replace("return result",
                                                                   "return result;")
    assert reasons(junk) == ["low_kept_rate"]
    assert "reverts_user_edit" in reasons(BASE + "        result += 1\n")
    # a partial edit (all of it kept) that a typical student sample beats
    assert reasons(BASE + ADDED + "        result += item\n", median=0.01) == [
        "farther_than_students"]


def test_failed_gates_become_repair_feedback() -> None:
    judgement = check_target(example(), BASE + ADDED, S, student_median=0.3)
    assert "no edit" in feedback_for(judgement)


def test_routing_of_noop_unparsable_and_bands() -> None:
    noop = {"example": example(settled_region=BASE + ADDED), "band": "trivial"}
    kept = [route_scored({**noop, "example": {**noop["example"], "request_id": f"r{i}"}}, S)
            for i in range(400)]
    assert {"noop", "noop_sampled_out"} == set(kept)
    assert 20 <= kept.count("noop") <= 70  # noop_keep_fraction 0.1 of 400
    scored = {"example": example(), "band": "ideal", "unparsable_samples": True}
    assert route_scored(scored, S) == "unparsable_samples"
    assert route_scored({**scored, "unparsable_samples": False}, S) is None
    assert route_scored({**scored, "unparsable_samples": False, "band": "noise"}, S) == (
        "band_noise")


# ------------------------------------------------------------------------------------------
# The simulator's teacher, erring on purpose, through the real client


KINDS = ("stale", "junk", "revert", "truncation", "preamble")
EXPECTED = {"stale": {"noop_target"}, "junk": {"low_kept_rate", "farther_than_students"},
            "revert": {"reverts_user_edit"}, "truncation": {"target_truncated"},
            "preamble": set()}


@pytest.mark.parametrize("kind", KINDS)
async def test_seeded_teacher_errors_are_caught(tmp_path: Path, kind: str) -> None:
    ex = example()
    parts = split_excerpt(ex)
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"request_id": "r-1", "path": "shop.py",
                                 "base_region": parts.region,
                                 "cursor_in_region": parts.cursor_in_region,
                                 "settled_region": SETTLED}) + "\n")
    rates = {f"teacher_{k}_rate": float(k == kind) for k in KINDS}
    async with (
        await start_simulator(SimulatorConfig(ground_truth=str(truth),
                                              answers=AnswerConfig(**rates))) as sim,
        TeacherClient(Endpoint(base_url=sim.url, model="t")) as teacher,
    ):
        att = await attempt(ex, teacher, None, S, median=0.3)
    got = set(att.judgement["reasons"])
    if kind == "preamble":  # chatty but correct: it must read, and pass
        assert att.region == SETTLED and got == set()
    else:
        assert got & EXPECTED[kind], got  # its own gate fires (others may too)
