"""The dataset an export writes: its train/eval split, near-duplicates, unfiltered eval set.

The emit stage stamps a per-repository split on each record as it streams. The export sees
all examples at once, so it decides the split again, here, with what only that view allows:

1. Units: an example's split unit is its repository (`streams.repo.repo_key`), or its session
   when it has none.
2. Near-duplicates (`streams.neardup`) over every example the export knows (training records,
   plus scored examples for the unfiltered set): units joined by a near-duplicate group form
   one component, so neither a repository nor a group ever straddles train and eval (a fork
   and its upstream travel together).
3. Eval policy: a component goes to eval when the stable hash of its smallest unit is below
   `eval_fraction` (the emit stage's rule, so a lone repository keeps its streamed split);
   if that gives fewer than `eval_min_repos` units, components are added in hash order
   until it does. Train always keeps one component. Adding repositories later may change
   which one tops eval up (the hash rule itself never moves a repository).
4. In each near-duplicate group, the first `dedup_max_per_group` examples are kept (examples
   with training records first, then the earliest settled, then request id); the others are
   dropped with the reason `near_duplicate`, all their records with them.
5. The unfiltered eval set: every scored example of an eval component, any band, not
   dropped, as `streams.emit.reference_record` (the settled region is the reference).
6. KTO records (`streams.kto`), when settled examples are given: one per settled example
   with a shown output and a verdict, in its component's split, not dropped.

Pure: lists of records in, lists of records and counts out; the same input, the same output.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.records import RejectedExample, TrainingRecord
from streams.emit import reference_record, rejected_record
from streams.ids import stable_fraction
from streams.kto import kto_record
from streams.neardup import near_duplicate_groups
from streams.repo import record_unit, split_unit
from streams.settings import Settings


@dataclass(frozen=True)
class Example:
    """What the plan needs to know about one example (one request id)."""

    request_id: str
    unit: str
    base_region: str
    settled_region: str
    settled_at_ms: int
    has_record: bool


@dataclass
class Plan:
    unit_split: dict[str, str]  # unit → train | eval
    group: dict[str, str]  # request id → its near-duplicate group's name
    dropped: dict[str, str]  # request id → the request id kept first in its group
    stats: dict[str, Any] = field(default_factory=dict)

    def split_of(self, unit: str) -> str:
        return self.unit_split.get(unit, "train")


def _fraction(unit: str) -> float:
    return stable_fraction("split", unit)  # the same hash as streams.emit.split_for


def assign_splits(components: Iterable[frozenset[str]], eval_fraction: float,
                  eval_min_units: int) -> dict[str, str]:
    """unit → split, a whole component at a time (see the module docstring, step 3)."""
    ranked = sorted((_fraction(min(c)), min(c), c) for c in components)
    eval_comps = {key for frac, key, _ in ranked if frac < eval_fraction}
    units = sum(len(c) for _, key, c in ranked if key in eval_comps)
    for _, key, c in ranked:
        if units >= eval_min_units or len(eval_comps) >= len(ranked) - 1:
            break
        if key not in eval_comps:
            eval_comps.add(key)
            units += len(c)
    if ranked and len(eval_comps) == len(ranked):  # e.g. eval_fraction >= 1: train keeps one
        eval_comps.discard(ranked[-1][1])
    return {u: ("eval" if key in eval_comps else "train") for _, key, c in ranked for u in c}


def plan(examples: Iterable[Example], settings: Settings) -> Plan:
    """Groups, the split of every unit, and the examples dropped as near-duplicates."""
    by_id = {e.request_id: e for e in examples}
    group = near_duplicate_groups({r: (e.base_region, e.settled_region)
                                   for r, e in by_id.items()},
                                  settings.dedup_threshold, settings.dedup_num_perm)
    members: dict[str, list[Example]] = defaultdict(list)
    for rid, g in group.items():
        members[g].append(by_id[rid])
    # components: units joined through the groups that span them (union-find on units)
    parent: dict[str, str] = {e.unit: e.unit for e in by_id.values()}

    def root(u: str) -> str:
        while parent[u] != u:
            u = parent[u]
        return u

    for ms in members.values():
        roots = sorted({root(e.unit) for e in ms})
        for r in roots[1:]:
            parent[r] = roots[0]
    comps: dict[str, set[str]] = defaultdict(set)
    for u in parent:
        comps[root(u)].add(u)
    unit_split = assign_splits((frozenset(c) for c in comps.values()),
                               settings.eval_fraction, settings.eval_min_repos)

    dropped: dict[str, str] = {}
    keep = settings.dedup_max_per_group
    multi = {g: ms for g, ms in members.items() if len(ms) > 1}
    for ms in multi.values():
        ms.sort(key=lambda e: (not e.has_record, e.settled_at_ms, e.request_id))
        if keep > 0:
            for e in ms[keep:]:
                dropped[e.request_id] = ms[0].request_id
    eval_units = sorted(u for u, s in unit_split.items() if s == "eval")
    stats = {
        "near_duplicates": {
            "threshold": settings.dedup_threshold, "num_perm": settings.dedup_num_perm,
            "max_per_group": keep, "groups": len(multi),
            "examples_in_groups": sum(len(ms) for ms in multi.values()),
            "groups_across_units": sum(1 for ms in multi.values()
                                       if len({e.unit for e in ms}) > 1),
            "dropped_examples": len(dropped),
        },
        "eval_policy": {
            "eval_fraction": settings.eval_fraction, "eval_min_repos": settings.eval_min_repos,
            "units": len(unit_split), "eval_units": len(eval_units),
            "eval_min_repos_met": len(eval_units) >= settings.eval_min_repos,
            "components_joined_by_near_duplicates": sum(1 for c in comps.values()
                                                        if len(c) > 1),
        },
    }
    return Plan(unit_split, group, dropped, stats)


@dataclass
class Arranged:
    records: list[dict[str, Any]]  # training records kept, `split` set by the plan
    unfiltered: list[TrainingRecord]  # reference records of the unfiltered eval set
    rejections: list[RejectedExample]  # rejected-examples records for the dropped examples
    plan: Plan
    dropped_records: Counter[str]  # kind → training records dropped
    kto: list[dict[str, Any]] = field(default_factory=list)  # KTO records kept
    kto_skipped: Counter[str] = field(default_factory=Counter)  # reason → settled examples


def _example_of_record(rec: dict[str, Any]) -> Example:
    prov = rec.get("provenance") or {}
    base, settled = prov.get("base_region"), prov.get("settled_region")
    if not isinstance(base, str) or not isinstance(settled, str):
        # a record written before provenance carried the regions: its prompt and answer
        base, settled = str(rec.get("prompt") or ""), str(rec.get("completion")
                                                           or rec.get("chosen") or "")
    return Example(rec["request_id"], record_unit(rec), base, settled,
                   int(prov.get("settled_at_ms") or 0), True)


def _example_of_scored(scored: dict[str, Any]) -> Example:
    ex = scored["example"]
    return Example(scored["request_id"], split_unit(ex), str(ex.get("base_region") or ""),
                   str(ex.get("settled_region") or ""), int(ex.get("settled_at_ms") or 0),
                   False)


def arrange(records: list[dict[str, Any]], scored: list[dict[str, Any]] | None,
            settings: Settings, settled: list[dict[str, Any]] | None = None) -> Arranged:
    """Apply the plan to the export's records (and scored examples, for the unfiltered
    eval set when `scored` is given; settled examples, for the KTO records when `settled`
    is given). Input order does not matter; output is sorted."""
    examples: dict[str, Example] = {}
    for rec in sorted(records, key=lambda r: (r["request_id"], r["format"] != "sft")):
        examples.setdefault(rec["request_id"], _example_of_record(rec))
    for sc in scored or []:
        if sc["request_id"] not in examples:
            examples[sc["request_id"]] = _example_of_scored(sc)
    kto_skipped: Counter[str] = Counter()
    kto_of: dict[str, dict[str, Any]] = {}
    for ex in sorted(settled or [], key=lambda e: str(e["request_id"])):
        made = kto_record(ex, settings)
        if isinstance(made, str):
            kto_skipped[made] += 1
            continue
        kto_of[ex["request_id"]] = made
        if ex["request_id"] not in examples:
            examples[ex["request_id"]] = _example_of_scored({"request_id": ex["request_id"],
                                                             "example": ex})
    p = plan(examples.values(), settings)
    kept: list[dict[str, Any]] = []
    dropped_records: Counter[str] = Counter()
    for rec in records:
        if rec["request_id"] in p.dropped:
            dropped_records[rec["format"]] += 1
            continue
        kept.append({**rec, "split": p.split_of(examples[rec["request_id"]].unit)})
    unfiltered = [reference_record(sc, settings) for sc in scored or []
                  if sc["request_id"] not in p.dropped
                  and p.split_of(examples[sc["request_id"]].unit) == "eval"]
    record_of = {r["request_id"]: r for r in sorted(records, key=lambda r: r["id"])}
    scored_of = {sc["request_id"]: sc for sc in scored or []}
    rejections = [_near_duplicate_rejection(rid, first, record_of.get(rid), scored_of.get(rid),
                                            settings)
                  for rid, first in sorted(p.dropped.items())]
    kto: list[dict[str, Any]] = []
    for rid, rec in kto_of.items():
        if rid in p.dropped:
            dropped_records["kto"] += 1
            continue
        kto.append({**rec, "split": p.split_of(examples[rid].unit)})
    return Arranged(sorted(kept, key=lambda r: r["id"]), sorted(unfiltered, key=lambda r: r["id"]),
                    rejections, p, dropped_records, sorted(kto, key=lambda r: r["id"]),
                    kto_skipped)


def _near_duplicate_rejection(rid: str, first: str, record: dict[str, Any] | None,
                              scored: dict[str, Any] | None,
                              settings: Settings) -> RejectedExample:
    prov = (record or {}).get("provenance") or {}
    if scored is not None:
        example, band = scored["example"], scored.get("band")
    else:  # known from its records only: what their provenance says
        example = {k: prov.get(k) for k in ("session_id", "path", "repo", "settle_reason",
                                             "settled_at_ms")}
        band = prov.get("band")
    return rejected_record(rid, "export", "near_duplicate", settings, example=example,
                           detail=f"near-duplicate of {first} (kept)", band=band or None)
