"""Near-duplicate groups (MinHash + LSH): near-identical region pairs group, others do not."""

from __future__ import annotations

import random

from streams.neardup import near_duplicate_groups, shingles

BASE = "def total(items):\n    s = 0\n    for it in items:\n        s += it.price\n    return s\n"
SETTLED = BASE.replace("it.price", "it.price * it.quantity")


def test_near_identical_pairs_group_and_different_ones_do_not() -> None:
    regions = {
        "r1": (BASE, SETTLED),
        "r2": (BASE, SETTLED),  # exact copy (a replayed session)
        "r3": (BASE.replace("    ", "  "), SETTLED.replace("    ", "  ")),  # reindented fork
        "r4": (BASE, BASE.replace("return s", "return round(s, 2)")),  # same base, other edit
        "r5": ("class A:\n    pass\n", "class A:\n    x: int = 0\n"),
    }
    groups = near_duplicate_groups(regions, threshold=0.85)
    assert groups["r1"] == groups["r2"] == groups["r3"] == "r1"  # named by the smallest id
    assert groups["r4"] == "r4" and groups["r5"] == "r5"


def test_both_regions_must_match() -> None:
    # same settled text, different request-time text: not the same example
    groups = near_duplicate_groups({"a": (BASE, SETTLED), "b": ("x = 1\n", SETTLED)}, 0.85)
    assert groups["a"] != groups["b"]
    assert shingles("ab", "") != shingles("", "ab")


def test_groups_are_deterministic_whatever_the_input_order() -> None:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta", "iota"]
    base_texts = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(40)]
    regions = {}
    for i, text in enumerate(base_texts):
        regions[f"r{i:03}"] = (text, text + " done")
        if i % 4 == 0:  # a near copy: one word changed
            regions[f"r{i:03}-copy"] = (text.replace(words[0], "omega", 1), text + " done")
    a = near_duplicate_groups(regions, 0.8)
    shuffled = dict(sorted(regions.items(), key=lambda _: rng.random()))
    assert near_duplicate_groups(shuffled, 0.8) == a
    grouped = {g for g in a.values() if list(a.values()).count(g) > 1}
    assert len(grouped) >= 8  # the copies found their originals
    for i in range(0, 40, 4):
        assert a[f"r{i:03}-copy"] == a[f"r{i:03}"]
