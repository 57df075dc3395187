"""`editstream report DIR`: what is in an export directory, in the terminal and as plots.

It answers the questions a training team asks before using a dataset: how many records of
each kind and split, why examples were rejected, where the student's distances fall against
the band thresholds, how often answers reverse the user's own edits, whether repair works,
and how the records are spread over time. It reads only DIR (the files and `manifest.json`
that `editstream export` wrote), so it works offline, on a copy, months later. Rejections
are there when the export used `--rejected`; without them the band and distance views only
see the ideal band.

Plots (PNG, matplotlib's Agg backend, no display needed) are written into DIR:
`distance.png` (student median distance per example, by band, thresholds drawn in),
`reversal.png` (reversal ratio of student samples and of teacher answers) and
`records_over_time.png` (examples by settle time).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from streams.corpus import corpus_lines
from streams.languages import language_of
from streams.score import quantile

PLOTS = ("distance.png", "reversal.png", "records_over_time.png")
BAND_COLORS = {"trivial": "#9aa5b1", "ideal": "#2a9d8f", "noise": "#e76f51", "": "#c9c9c9"}


@dataclass
class Example:
    """One example of the export: a training record pair or a rejection, flattened."""

    request_id: str
    outcome: str  # "record" or "rejected"
    band: str  # trivial | ideal | noise | "" (never scored)
    split: str = ""
    reason: str = ""  # stage:reason for rejections
    settle_reason: str = ""
    settled_at_ms: int = 0
    student_p50: float | None = None
    student_reversal: float | None = None
    teacher_distance: float | None = None
    teacher_reversal: float | None = None
    repair_attempts: int = 0
    kinds: set[str] = field(default_factory=set)  # sft / preference
    language: str = "other"


@dataclass
class Export:
    root: Path
    manifest: dict[str, Any]
    examples: dict[str, Example]
    rows: dict[str, dict[str, int]]  # kind → split → rows


def read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = pq.read_table(path).to_pylist()
        return rows
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _num(value: Any) -> float | None:
    # NaN (a missing float in an export column) is not a number to summarise
    return float(value) if isinstance(value, int | float) and value == value else None


def load(root: Path) -> Export:
    """The export in `root` as one Example per request id."""
    manifest = orjson.loads((root / "manifest.json").read_bytes())
    examples: dict[str, Example] = {}
    rows: dict[str, dict[str, int]] = {}
    for kind, splits in manifest.get("data_files", {}).items():
        for split, rel in splits.items():
            data = read_rows(root / rel)
            rows.setdefault(kind, {})[split] = len(data)
            if split == "eval_unfiltered":  # the same examples again, unfiltered: rows only
                continue
            for row in data:
                if kind == "rejected":
                    examples[row["request_id"]] = _rejected(row)
                else:
                    _add_record(examples, kind, row)
    return Export(root, manifest, examples, rows)


def _add_record(examples: dict[str, Example], kind: str, row: dict[str, Any]) -> None:
    ex = examples.get(row["request_id"])
    if ex is None:
        teacher = (orjson.loads(row.get("scores") or "{}") or {}).get("teacher") or {}
        ex = examples[row["request_id"]] = Example(
            row["request_id"], "record", row.get("band") or "ideal", split=row["split"],
            settle_reason=row.get("settle_reason", ""),
            settled_at_ms=int(row.get("settled_at_ms") or 0),
            student_p50=_num(row.get("student_distance_p50")),
            student_reversal=_num(row.get("student_reversal_mean")),
            teacher_distance=_num(teacher.get("distance")),
            teacher_reversal=_num(teacher.get("reversal_ratio")),
            repair_attempts=int(row.get("repair_attempts") or 0),
            language=row.get("language")
            or language_of((orjson.loads(row.get("provenance") or "{}") or {}).get("path")))
    ex.kinds.add(kind)


def _rejected(row: dict[str, Any]) -> Example:
    summary = orjson.loads(row.get("summary") or "null") or {}
    example = orjson.loads(row.get("example") or "null") or {}
    judgement = orjson.loads(row.get("judgement") or "null") or {}
    return Example(
        row["request_id"], "rejected", row.get("band") or "",
        reason=f"{row.get('stage')}:{row.get('reason')}",
        settle_reason=str(example.get("settle_reason") or ""),
        settled_at_ms=int(row.get("settled_at_ms") or 0),
        student_p50=_num(summary.get("p50")), student_reversal=_num(summary.get("reversal_mean")),
        teacher_distance=_num(judgement.get("distance")),
        teacher_reversal=_num(judgement.get("reversal_ratio")),
        language=language_of(example.get("path")))


# --------------------------------------------------------------------------- text


def _fmt(counter: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{k or '(none)'}={v}" for k, v in sorted(counter.items())) or "-"


def quantiles(values: Sequence[float | None]) -> str:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return "no data"
    return (f"p10 {quantile(vals, 0.1):.3f}  p50 {quantile(vals, 0.5):.3f}  "
            f"p90 {quantile(vals, 0.9):.3f}  max {vals[-1]:.3f}  (n={len(vals)})")


def summary(exp: Export, plots: list[Path]) -> str:
    m = exp.manifest
    ex = list(exp.examples.values())
    records = [e for e in ex if e.outcome == "record"]
    rejected = [e for e in ex if e.outcome == "rejected"]
    th = m.get("thresholds", {})
    counts = m.get("counts", {})
    kinds = ", ".join(f"{k} {sum(s.values())} (" + " / ".join(f"{sp} {n}" for sp, n in s.items())
                      + ")" for k, s in counts.items() if k in ("sft", "preference"))
    repaired = sum(1 for e in records if e.repair_attempts > 0)
    exhausted = sum(1 for e in rejected if e.reason.endswith(":repair_exhausted"))
    judged_bad = sum(1 for e in rejected if e.reason.endswith(":judged_bad"))
    tried = repaired + exhausted
    lines = [
        f"export {exp.root}  ({m.get('format')}, pipeline_version {m.get('pipeline_version')}, "
        f"exported {m.get('exported_at')}, sha256 {str(m.get('content_sha256'))[:16]})",
        f"  records: {counts.get('records', 0)}  [{kinds}]; "
        f"duplicates removed {m.get('duplicates_removed', 0)}",
        f"  examples: {len(ex)} ({len(records)} with records, {len(rejected)} rejected"
        + ("" if counts.get("rejected") is not None else "; rejections not exported: "
           "re-export with --rejected for the full picture") + ")",
        f"  by band:            {_fmt(Counter(e.band or 'unscored' for e in ex))}",
        f"  by split:           {_fmt(Counter(e.split for e in records))}",
        f"  settled by reason:  {_fmt(Counter(e.settle_reason for e in ex))}",
        f"  rejected by reason: {_fmt(Counter(e.reason for e in rejected))}",
        f"  student median distance per example: {quantiles([e.student_p50 for e in ex])}",
        f"      bands: trivial < {th.get('band_low')} <= ideal <= {th.get('band_high')} < noise",
        f"  teacher distance (records):         "
        f"{quantiles([e.teacher_distance for e in records])}",
        f"  student reversal ratio (mean/ex.):  {quantiles([e.student_reversal for e in ex])}",
        f"  teacher reversal ratio (records):   "
        f"{quantiles([e.teacher_reversal for e in records])}",
        f"  repair: {tried} examples went to repair, {repaired} repaired, {exhausted} exhausted"
        + (f" (success {repaired / tried:.0%})" if tried else "")
        + f"; {judged_bad} judged bad without repair",
        f"  time range (settled): {m.get('time_range', {}).get('settled_at', {}).get('min')} .. "
        f"{m.get('time_range', {}).get('settled_at', {}).get('max')}",
        *dataset_lines(exp),
        *corpus_lines(counts.get("corpus")),
        "  plots: " + ", ".join(str(p) for p in plots),
    ]
    return "\n".join(lines)


def dataset_lines(exp: Export) -> list[str]:
    """Per-language figures, the unfiltered eval set and near-duplicates (the export's
    `streams/dataset.py` decisions), for the summary."""
    m = exp.manifest
    by_lang: dict[str, Counter[str]] = {}
    for e in exp.examples.values():
        c = by_lang.setdefault(e.language, Counter())
        c[e.split if e.outcome == "record" else "rejected"] += 1
    lines = ["  by language (examples: train / eval / rejected):"]
    for lang, c in sorted(by_lang.items(), key=lambda kv: (-sum(kv[1].values()), kv[0])):
        p50s = [e.student_p50 for e in exp.examples.values() if e.language == lang]
        lines.append(f"      {lang:<12} {c['train']:>5} / {c['eval']:>4} / {c['rejected']:>5}"
                     f"   student median distance {quantiles(p50s)}")
    unfiltered = exp.rows.get("sft", {}).get("eval_unfiltered")
    nd, ep = m.get("near_duplicates") or {}, m.get("eval_policy") or {}
    lines.append(f"  eval: {ep.get('eval_units', '?')} of {ep.get('units', '?')} repositories; "
                 f"unfiltered eval set: {'not exported' if unfiltered is None else unfiltered}")
    if nd:
        lines.append(f"  near-duplicates: {nd.get('groups')} groups, "
                     f"{nd.get('examples_in_groups')} examples, {nd.get('dropped_examples')} "
                     f"dropped (at most {nd.get('max_per_group') or 'all'} kept per group)")
    return lines


def target_quality(root: Path, manifest: dict[str, Any]) -> str:
    """Gates, invalid student samples and no-op share, read from the export's files.

    Rejections per gate count every failed gate of the last judgement of examples that left
    without a record (repaired examples failed a gate first: they are counted from their
    record's repair attempts, not here). Invalid samples are summed over every example that
    was scored (records' student summaries and rejections' summaries)."""
    gates: Counter[str] = Counter()
    samples = truncated = unparsable = 0
    sft = noop = 0
    pref_sources: Counter[str] = Counter()
    for kind, splits in manifest.get("data_files", {}).items():
        for rel in splits.values():
            for row in read_rows(root / rel):
                if kind == "rejected":
                    judgement = orjson.loads(row.get("judgement") or "null") or {}
                    gates.update(judgement.get("reasons") or [])
                    if row.get("reason") == "unparsable_samples":
                        gates["(example) unparsable_samples"] += 1
                    student = orjson.loads(row.get("summary") or "null") or {}
                else:
                    student = (orjson.loads(row.get("scores") or "{}") or {}).get("student") or {}
                if kind == "preference":
                    pref_sources[str(row.get("rejected_source"))] += 1
                    continue  # its SFT twin carries the same student summary
                if kind == "sft":
                    sft += 1
                    noop += bool(row.get("noop"))
                samples += int(student.get("n_samples") or 0)
                truncated += int(student.get("n_truncated") or 0)
                unparsable += int(student.get("n_unparsable") or 0)

    def rate(k: int) -> str:
        return f"{k} ({k / samples:.2%})" if samples else f"{k}"

    return "\n".join([
        f"  target gates failed (rejected examples): {_fmt(gates)}",
        f"  student samples: {samples}; truncated {rate(truncated)}, "
        f"unparsable {rate(unparsable)} (left out of band medians)",
        f"  no-op share of SFT: {noop}/{sft}" + (f" ({noop / sft:.1%})" if sft else ""),
        f"  preference rejected side: {_fmt(pref_sources)}",
    ])


# --------------------------------------------------------------------------- plots


def plot(exp: Export) -> list[Path]:
    """Write the PNGs into the export directory; return their paths."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    ex = list(exp.examples.values())
    th = exp.manifest.get("thresholds", {})
    bins = [i / 40 for i in range(41)]
    paths = []

    # distance: stacked by band, thresholds drawn in
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    bands = [b for b in ("trivial", "ideal", "noise", "")
             if any(e.band == b and e.student_p50 is not None for e in ex)]
    data = [[e.student_p50 for e in ex if e.band == b and e.student_p50 is not None]
            for b in bands]
    if any(data):
        ax.hist(data, bins=bins, stacked=True, label=[b or "unscored" for b in bands],
                color=[BAND_COLORS[b] for b in bands])
    teacher = [e.teacher_distance for e in ex if e.outcome == "record"
               and e.teacher_distance is not None]
    if teacher:
        ax.hist(teacher, bins=bins, histtype="step", linewidth=1.8, color="#264653",
                label="teacher answer (records)")
    for name in ("band_low", "band_high"):
        if isinstance(th.get(name), int | float):
            ax.axvline(th[name], color="black", linestyle="--", linewidth=1)
            ax.annotate(f"{name} {th[name]}", (th[name], 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8)
    ax.set(xlim=(0, 1), xlabel="normalized Levenshtein distance to the settled region",
           ylabel="examples", title="Student median distance per example, by band")
    ax.legend(fontsize=8)
    paths.append(_save(fig, exp.root / PLOTS[0]))

    # reversal ratio: how much of the user's own edit an answer undoes
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    student = [e.student_reversal for e in ex if e.student_reversal is not None]
    teacher = [e.teacher_reversal for e in ex if e.outcome == "record"
               and e.teacher_reversal is not None]
    # log scale: most answers reverse nothing, and the tail is what matters
    if student:
        ax.hist(student, bins=bins, alpha=0.7, color="#e9c46a", log=True,
                label="student samples (mean per example)")
    if teacher:
        ax.hist(teacher, bins=bins, histtype="step", linewidth=1.8, color="#264653", log=True,
                label="teacher answer (records)")
    jmax = th.get("judge_max_reversal")
    if isinstance(jmax, int | float):
        ax.axvline(jmax, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"judge_max_reversal {jmax}", (jmax, 1),
                    xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8)
    ax.set(xlim=(0, 1), xlabel="share of the user's own edit that the answer undoes",
           ylabel="examples (log scale)", title="Reversal ratio")
    if student or teacher:
        ax.legend(fontsize=8)
    paths.append(_save(fig, exp.root / PLOTS[1]))

    # over time: examples by settle time, records stacked over rejections
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    times = [e.settled_at_ms for e in ex if e.settled_at_ms]
    if times:
        lo, hi = min(times), max(times)
        width = _bucket_ms(hi - lo)
        start = lo - lo % width
        n = (hi - start) // width + 1
        groups: dict[str, list[int]] = {"sft only": [], "sft + preference": [], "rejected": []}
        for e in ex:
            if not e.settled_at_ms:
                continue
            key = ("rejected" if e.outcome == "rejected" else
                   "sft + preference" if "preference" in e.kinds else "sft only")
            groups[key].append(e.settled_at_ms)
        xs = [datetime.fromtimestamp((start + i * width) / 1000, UTC) for i in range(n)]
        bottom = [0] * n
        colors = {"sft only": "#2a9d8f", "sft + preference": "#264653", "rejected": "#e76f51"}
        for name, stamps in groups.items():
            heights = [0] * n
            for t in stamps:
                heights[(t - start) // width] += 1
            ax.bar(xs, heights, bottom=bottom,  # type: ignore[arg-type]  # dates: matplotlib's units width=width / 86_400_000 * 0.9, align="edge",
                   label=name, color=colors[name])
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.legend(fontsize=8)
        fig.autofmt_xdate()
        ax.set(xlabel=f"settled at (UTC, {_bucket_name(width)} buckets)", ylabel="examples",
               title="Examples over time")
    else:
        ax.set(title="Examples over time (no settle times)")
    paths.append(_save(fig, exp.root / PLOTS[2]))
    return paths


def _bucket_ms(span_ms: int) -> int:
    """A round bucket giving roughly 10-60 bars over the span."""
    for width in (1_000, 10_000, 60_000, 600_000, 3_600_000, 21_600_000, 86_400_000,
                  7 * 86_400_000):
        if span_ms / width <= 60:
            return width
    return 30 * 86_400_000


def _bucket_name(width: int) -> str:
    names = {1_000: "1 s", 10_000: "10 s", 60_000: "1 min", 600_000: "10 min",
             3_600_000: "1 h", 21_600_000: "6 h", 86_400_000: "1 day", 7 * 86_400_000: "1 week"}
    return names.get(width, "30 days")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # counts of examples: whole numbers only
        if ax.get_yscale() == "linear":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`report [DIR]`: DIR is optional so `report --prometheus URL` can share the command."""
    parser.add_argument("dir", nargs="?", default=None, metavar="DIR",
                        help="an export directory (written by `editstream export`)")
    parser.add_argument("--no-plots", action="store_true", help="terminal summary only")


def main_report(ns: argparse.Namespace) -> int:
    if not ns.dir:
        print("editstream report: give an export directory (DIR)", file=sys.stderr)
        return 2
    root = Path(ns.dir)
    if not (root / "manifest.json").exists():
        print(f"editstream report: {root} has no manifest.json (not a finished export)",
              file=sys.stderr)
        return 2
    exp = load(root)
    plots = [] if getattr(ns, "no_plots", False) else plot(exp)
    print(summary(exp, plots))
    print(target_quality(root, exp.manifest))
    return 0
