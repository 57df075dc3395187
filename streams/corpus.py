"""What a corpus of settled examples looks like: its edits by kind and language, and two
reference predictors.

Why: before training on (or judging a model with) a dataset, an engineer wants to know
what it teaches: insertions only, or deletions and in-place replacements too; edits within
a line or over several; edits at the cursor or a jump away; which languages. The two
reference predictors are for orientation, never thresholds: ``noop`` predicts the region as
it was (how often "no edit" would be right, and how far it is from what was settled) and
``oracle`` predicts the settled region (the ceiling, by construction exact).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from streams.languages import language_of
from streams.scoring import normalized_levenshtein

JUMP_LINES = 2  # a change starting this many lines or more away from the cursor is a jump


def edit_kind(base: str, settled: str, cursor: int | None = None) -> tuple[str, str, bool]:
    """(insert | delete | replace | none, within_line | multi_line | none, jump) of the
    change from `base` to `settled` (`cursor`: chars into `base`, when known)."""
    if base == settled:
        return "none", "none", False
    p = 0
    n = min(len(base), len(settled))
    while p < n and base[p] == settled[p]:
        p += 1
    s = 0
    while s < n - p and base[-1 - s] == settled[-1 - s]:
        s += 1
    removed, added = base[p : len(base) - s], settled[p : len(settled) - s]
    kind = "insert" if not removed else "delete" if not added else "replace"
    # within a line: no line break added or removed (a new line counts as multi-line)
    span = "multi_line" if "\n" in removed or "\n" in added else "within_line"
    jump = False
    if cursor is not None:
        lo, hi = p, len(base) - s
        if cursor < lo:
            jump = base.count("\n", cursor, lo) >= JUMP_LINES
        elif cursor > hi:
            jump = base.count("\n", hi, cursor) >= JUMP_LINES
    return kind, span, jump


def _cursor_in_region(example: Mapping[str, Any]) -> int | None:
    try:
        raw = str(example["excerpt"]).encode()
        start, end = example["editable_range"]
        cursor = min(max(int(example["cursor"]), start), end)
        return len(raw[start:cursor].decode(errors="replace"))
    except (KeyError, TypeError, ValueError):
        return None


def corpus_figures(examples: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Figures over settled examples (`settled-examples` records, or `scored-examples`'
    `example`): counts by edit kind, span, jump and language, and the reference predictors
    (exact-match rate and mean normalized Levenshtein distance to the settled region)."""
    kinds: Counter[str] = Counter()
    spans: Counter[str] = Counter()
    languages: Counter[str] = Counter()
    jumps = n = noop_exact = 0
    noop_dist = 0.0
    for ex in examples:
        base, settled = str(ex.get("base_region", "")), str(ex.get("settled_region", ""))
        kind, span, jump = edit_kind(base, settled, _cursor_in_region(ex))
        kinds[kind] += 1
        spans[span] += 1
        jumps += jump
        languages[language_of(ex.get("path"))] += 1
        n += 1
        noop_exact += base == settled
        noop_dist += normalized_levenshtein(base, settled)
    ref = {"noop": {"exact": round(noop_exact / n, 4) if n else None,
                    "distance_mean": round(noop_dist / n, 4) if n else None},
           "oracle": {"exact": 1.0 if n else None, "distance_mean": 0.0 if n else None}}
    return {"examples": n,
            "by_kind": {k: kinds[k] for k in ("insert", "delete", "replace", "none")},
            "by_span": {k: spans[k] for k in ("within_line", "multi_line")},
            "jumps": jumps,
            "by_language": dict(sorted(languages.items())),
            "reference": ref}


def corpus_lines(fig: Mapping[str, Any] | None) -> list[str]:
    """The figures as report lines (the report and the demo print them)."""
    if not fig or not fig.get("examples"):
        return ["  corpus: no settled examples known (export with eval_unfiltered to see them)"]
    n = fig["examples"]

    def pct(k: int) -> str:
        return f"{k} ({100 * k / n:.0f}%)"

    kinds, spans = fig["by_kind"], fig["by_span"]
    ref = fig["reference"]
    return [
        f"  corpus: {n} settled examples (scored, any band)",
        "    edits: " + ", ".join(f"{k} {pct(v)}" for k, v in kinds.items()),
        f"    span: within a line {pct(spans['within_line'])}, multi-line "
        f"{pct(spans['multi_line'])}; a jump from the cursor {pct(fig['jumps'])}",
        "    languages: " + ", ".join(f"{k} {v}" for k, v in fig["by_language"].items()),
        f"    reference predictors (orientation, not thresholds): noop exact "
        f"{ref['noop']['exact']}, distance {ref['noop']['distance_mean']}; oracle exact "
        f"{ref['oracle']['exact']}, distance {ref['oracle']['distance_mean']}",
    ]
