"""The export's dataset plan: near-duplicate groups never straddle the split, duplicates beyond
the setting are dropped with a reason, the eval policy, the unfiltered eval set."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import schemas
from streams.dataset import arrange, assign_splits
from streams.emit import training_records
from streams.ids import stable_fraction
from streams.repo import split_unit
from streams.settings import Settings

S = Settings(eval_fraction=0.3, eval_min_repos=2, dedup_max_per_group=1)
J = {"ok": True, "reasons": [], "parse_ok": True, "distance": 0.1, "reversal_ratio": 0.0}


def scored(rid: str, repo: str | None, base: str, settled: str, *, band: str = "ideal",
           at: int = 1_000, session: str = "s") -> dict[str, Any]:
    excerpt = f"# head\n{base}# tail\n"
    start = len(b"# head\n")
    ex = {"v": 1, "pipeline_version": "v1", "session_id": session, "ts_ms": 1,
          "can_collect_data": True, "request_id": rid, "path": "src/m.py",
          "in_open_source_repo": True, "repo_url": repo, "excerpt": excerpt,
          "excerpt_start": 0, "cursor": start,
          "editable_range": [start, start + len(base.encode())],
          "history": [], "settle_reason": "quiescence", "settled_at_ms": at,
          "base_region": base, "settled_region": settled, "touching_edits": 1}
    return {"request_id": rid, "example": ex, "student": {"model": "student"}, "band": band,
            "summary": {"n": 4, "p50": 0.3, "reversal_mean": 0.0}}


def code(i: int) -> tuple[str, str]:
    base = f"def f{i}(a, b):\n    value_{i} = a * {i} + b\n    return value_{i}\n"
    return base, base.replace("return", f"log({i})\n    return")


def records_of(sc: dict[str, Any]) -> list[dict[str, Any]]:
    return training_records(sc, sc["example"]["settled_region"], J, S)


def corpus() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """40 repositories with 3 distinct examples each, plus forks: one example of each of the
    first 10 repositories copied into a fork repository (a near-duplicate across units)."""
    all_scored = []
    for r in range(40):
        for k in range(3):
            all_scored.append(scored(f"r{r:02}-{k}", f"https://github.com/o/repo{r}",
                                     *code(r * 10 + k), at=1000 + k))
    for r in range(10):
        base, settled = code(r * 10)
        # the same edit in a fork, indented with tabs (whitespace runs compare equal)
        all_scored.append(scored(f"fork{r:02}", f"git@github.com:fork/repo{r}.git",
                                 base.replace("    ", "\t"), settled + "\n", at=5000))
    # trivial-band examples have no record; they are in the unfiltered eval set only
    recs = [rec for sc in all_scored if not sc["request_id"].endswith("-2")
            for rec in records_of(sc)]
    for sc in all_scored:
        if sc["request_id"].endswith("-2"):
            sc["band"] = "trivial"
    return recs, all_scored


def test_a_group_never_straddles_the_split_and_extra_copies_are_dropped() -> None:
    recs, all_scored = corpus()
    out = arrange(recs, all_scored, S)
    split_of = {r["request_id"]: r["split"] for r in out.records}
    split_of |= {r["request_id"]: "eval" for r in out.unfiltered}
    # every fork pair: the original kept (it has a record and settled first), the fork dropped
    assert set(out.plan.dropped) == {f"fork{r:02}" for r in range(10)}
    assert all(out.plan.dropped[f"fork{r:02}"] == f"r{r:02}-0" for r in range(10))
    assert out.plan.stats["near_duplicates"]["groups"] == 10
    assert out.plan.stats["near_duplicates"]["groups_across_units"] == 10
    assert out.dropped_records["sft"] == 10
    # the fork repository travels with its upstream: both units in one split
    for r in range(10):
        assert out.plan.split_of(f"github.com/fork/repo{r}") == \
            out.plan.split_of(f"github.com/o/repo{r}")
    # no repository in both splits
    by_repo: dict[str, set[str]] = defaultdict(set)
    for rec in out.records:
        by_repo[rec["provenance"]["repo"]].add(rec["split"])
    assert all(len(s) == 1 for s in by_repo.values())
    # each drop is a rejected-examples record with its reason
    assert [r["request_id"] for r in out.rejections] == sorted(out.plan.dropped)
    for rej in out.rejections:
        assert (rej["stage"], rej["reason"]) == ("export", "near_duplicate")
        assert schemas.errors("rejected-examples", rej) == []
    assert {split_of[f"r{r:02}-0"] for r in range(40)} == {"train", "eval"}


def test_without_a_limit_duplicates_stay_but_still_share_a_split() -> None:
    recs, all_scored = corpus()
    out = arrange(recs, all_scored, S.replace(dedup_max_per_group=0))
    assert not out.plan.dropped and not out.rejections
    splits = {r["request_id"]: r["split"] for r in out.records}
    for r in range(10):
        assert splits[f"fork{r:02}"] == splits[f"r{r:02}-0"]


def test_the_unfiltered_eval_set_is_every_eval_example_with_the_settled_reference() -> None:
    recs, all_scored = corpus()
    out = arrange(recs, all_scored, S)
    eval_repos = {r["provenance"]["repo"] for r in out.records if r["split"] == "eval"}
    assert len(eval_repos) >= 2
    expected = {sc["request_id"] for sc in all_scored
                if out.plan.split_of(split_unit(sc["example"])) == "eval"
                and sc["request_id"] not in out.plan.dropped}
    got = {r["request_id"] for r in out.unfiltered}
    assert got == expected
    assert {r["provenance"]["band"] for r in out.unfiltered} == {"ideal", "trivial"}
    by_id = {sc["request_id"]: sc for sc in all_scored}
    for r in out.unfiltered:
        settled = by_id[r["request_id"]]["example"]["settled_region"]
        assert r["split"] == "eval_unfiltered" and settled in r["completion"]
        assert r["provenance"]["teacher_model"] is None
    # no unfiltered example comes from a train repository
    train_repos = {r["provenance"]["repo"] for r in out.records if r["split"] == "train"}
    assert not {r["provenance"]["repo"] for r in out.unfiltered} & train_repos


def test_the_same_input_gives_the_same_dataset() -> None:
    recs, all_scored = corpus()
    a = arrange(recs, all_scored, S)
    b = arrange(list(reversed(recs)), list(reversed(all_scored)), S)
    assert a.records == b.records and a.unfiltered == b.unfiltered
    assert a.rejections == b.rejections and a.plan.stats == b.plan.stats


def test_eval_fraction_by_repository_and_the_minimum_number_of_eval_repositories() -> None:
    units = [frozenset({f"github.com/o/r{i}"}) for i in range(200)]
    plain = assign_splits(units, 0.1, 0)
    n_eval = sum(1 for s in plain.values() if s == "eval")
    assert 8 <= n_eval <= 35
    # the hash rule is emit's: a lone repository keeps its streamed split
    assert all((stable_fraction("split", u) < 0.1) == (s == "eval") for u, s in plain.items())
    # topped up to the minimum, in hash order: the hash-rule repositories stay in eval
    few = units[:5]
    topped = assign_splits(few, 0.0, 3)
    assert sum(1 for s in topped.values() if s == "eval") == 3
    ranked = sorted(few, key=lambda c: stable_fraction("split", min(c)))
    assert [topped[min(c)] for c in ranked] == ["eval"] * 3 + ["train"] * 2
    # train always keeps one component, whatever the settings ask
    assert list(assign_splits(few[:1], 0.9, 5).values()) == ["train"]
    two = assign_splits(few[:2], 1.0, 5)
    assert sorted(two.values()) == ["eval", "train"]


def test_a_component_counts_all_its_repositories() -> None:
    comp = frozenset({"github.com/o/a", "github.com/fork/a"})
    got = assign_splits([comp, frozenset({"github.com/o/b"}), frozenset({"github.com/o/c"})],
                        0.0, 2)
    assert got["github.com/o/a"] == got["github.com/fork/a"]
    # two repositories in eval: either the component alone, or both singletons
    assert sum(1 for s in got.values() if s == "eval") >= 2
