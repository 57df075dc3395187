"""Target gates: each seeded error kind is caught by its own gate (the pure checks; the
simulator's teacher erring on purpose is tests/agents/test_teacher_gates.py)."""

from __future__ import annotations

from typing import Any

from streams.judge import check_target
from streams.repair import feedback_for
from streams.route import route_scored
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
