"""KTO records from live outcomes (streams/kto.py), and their place in the export's plan."""

from __future__ import annotations

from typing import Any

import pytest

from streams.dataset import arrange
from streams.emit import training_records
from streams.formats import build_prompt, completion_for
from streams.kto import kto_record, outcome_label
from streams.settings import Settings
from tests.streams.test_dataset import code, scored

S = Settings(eval_fraction=0.3, eval_min_repos=2, dedup_max_per_group=1)
J = {"ok": True, "reasons": [], "parse_ok": True, "distance": 0.1, "reversal_ratio": 0.0}


def settled(rid: str, repo: str | None, i: int, *, outcome: str | None, shown: bool = True,
            output: str | None = "edit", **kw: Any) -> dict[str, Any]:
    """A settled example of code(i) where the editor showed `output` ("edit": the user's own
    settled edit; "noop": the base region; "other": an edit the user did not keep)."""
    base, final = code(i)
    ex: dict[str, Any] = scored(rid, repo, base, final, **kw)["example"]
    ex["output"] = {"edit": final, "noop": base, "other": base.replace("a * ", "a ** "),
                    None: None}[output]
    ex["model_version"] = "student-0.3"
    if outcome is not None:
        ex["outcome"], ex["was_shown"] = outcome, shown
    return ex


@pytest.mark.parametrize("outcome,shown,output,label", [
    ("accepted", True, "edit", True),      # accepted and kept
    ("accepted", True, "other", False),    # accepted, then undone inside the window
    ("rejected", True, "other", False),
    ("rejected", True, "edit", False),     # rejected, even if the user typed it later
    ("ignored", True, "edit", "no_verdict"),
    ("discarded", False, "edit", "not_shown"),
    ("accepted", False, "edit", "not_shown"),
    (None, True, "edit", "not_shown"),      # no outcome event at all
    ("accepted", True, None, "no_output"),
    ("accepted", True, "noop", "no_edit_shown"),
])
def test_label_is_the_users_verdict(outcome: str | None, shown: bool, output: str | None,
                                    label: bool | str) -> None:
    assert outcome_label(settled("r", "https://github.com/o/a", 1, outcome=outcome,
                                 shown=shown, output=output)) == label


def test_record_is_trls_kto_format_with_the_sft_prompt() -> None:
    ex = settled("r1", "https://user:secret@github.com/o/a.git", 1, outcome="accepted",
                 output="other")
    rec = kto_record(ex, S)
    assert isinstance(rec, dict)
    assert rec["label"] is False and rec["undone"] is True and rec["format"] == "kto"
    assert rec["prompt"] == build_prompt(ex, S.record_format, S.prompt_max_tokens)
    assert rec["completion"] == completion_for(ex["output"], S.record_format,
                                               ex["base_region"])
    assert rec["completion"] != completion_for(ex["settled_region"], S.record_format)
    assert rec["provenance"]["repo"] == "github.com/o/a"  # the key, no credentials
    assert "secret" not in str(rec)
    assert rec["provenance"]["kept_rate"] < 0.5
    sft = training_records({"example": ex, "student": {"model": "m"}, "summary": {}},
                           ex["settled_region"], J, S)[0]  # type: ignore[arg-type]
    assert rec["prompt"] == sft["prompt"] and rec["id"] != sft["id"]
    assert kto_record(ex, S) == rec  # deterministic (ids too)


def test_export_plan_splits_and_dedups_kto_records_with_the_others() -> None:
    outcomes = []
    for r in range(20):
        for k in range(2):
            outcomes.append(settled(f"r{r:02}-{k}", f"https://github.com/o/repo{r}",
                                    r * 10 + k, outcome="accepted" if k else "rejected",
                                    output="edit" if k else "other", at=1000 + k))
    # a near-duplicate in a fork, and repeated settled records of the same examples
    fork = settled("fork", "https://github.com/fork/repo3", 30, outcome="accepted",
                   at=5000)
    fork["excerpt"] = fork["excerpt"].replace("    ", "\t")
    no_verdict = settled("quiet", "https://github.com/o/repo1", 999, outcome="ignored")
    # SFT records for repo0..9 only: the rest of the units come from the outcomes alone
    recs = [rec for ex in outcomes[:20]
            for rec in training_records({"example": ex, "student": {"model": "m"},
                                         "summary": {}}, ex["settled_region"], J, S)]
    got = arrange(recs, None, S, [*outcomes, fork, no_verdict])
    assert got.kto_skipped == {"no_verdict": 1}
    assert {r["request_id"] for r in got.kto} == {e["request_id"] for e in outcomes}
    assert got.plan.dropped == {"fork": "r03-0"}  # the fork's copy is dropped, its record too
    assert got.dropped_records["kto"] == 1
    split_of_repo: dict[str, set[str]] = {}
    for r in [*got.records, *got.kto]:
        split_of_repo.setdefault(r["provenance"]["repo"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of_repo.values())  # one split per repository
    assert {"train", "eval"} <= {r["split"] for r in got.kto}
    labels = [r["label"] for r in got.kto]
    assert labels.count(True) == 20 and labels.count(False) == 20
    again = arrange(list(reversed(recs)), None, S, [no_verdict, fork, *reversed(outcomes)])
    assert again.kto == got.kto  # order of input does not matter
