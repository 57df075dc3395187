"""`editstream scorecard`: read eval records, print and write the model scorecard, and exit with
the verdict (0 ship, 1 do not ship, 2 too little data or nothing to compare).

The records come from the broker (the `eval-results` topic, and with `--live` the `scorecard`
topic of the served model's live records) or from JSONL files (`--results`). The figures and
the rule are streams/scorecard.py's; this module reads, resolves the names, writes
scorecard.md, scorecard.json and scorecard.png into `--out`, and prints the Markdown.

`render_scorecard` is the entry point for other tools (the demo): records in, files written,
(text, exit code) out.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from streams import scorecard as core
from streams import settings as settings_mod
from streams.settings import Settings

EVAL_TOPIC = "eval-results"
LIVE_TOPIC = "scorecard"
FILES = ("scorecard.md", "scorecard.json", "scorecard.png")


# --------------------------------------------------------------------------- reading


def parse_lines(lines: Iterable[bytes | str]) -> tuple[list[dict[str, Any]], int]:
    """(eval records, how many lines/records were not one) of raw JSON values."""
    records, bad = [], 0
    for raw in lines:
        if not raw or not raw.strip():
            continue
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            bad += 1
            continue
        if core.valid(value) is None:
            records.append(value)
        else:
            bad += 1
    return records, bad


def read_files(paths: Sequence[str]) -> tuple[list[dict[str, Any]], int]:
    records: list[dict[str, Any]] = []
    bad = 0
    for path in paths:
        with open(path, "rb") as fh:
            got, skipped = parse_lines(fh)
        records += got
        bad += skipped
    return records, bad


async def read_topics(settings: Settings, topics: Sequence[str], timeout_s: float
                      ) -> tuple[list[dict[str, Any]], int]:
    """Every record of `topics` (prefixed), in that order (so a later topic's copy of a
    (request_id, candidate) is the one kept), read committed."""
    from editstream.topics.kafka_io import read_to_end

    raw: list[bytes] = []
    for topic in topics:
        async for rec in read_to_end(settings, settings.topic(topic), timeout_s=timeout_s):
            if rec.value is not None:
                raw.append(rec.value)
    return parse_lines(raw)


def window_ms(text: str | None, flag: str) -> int | None:
    """A WHEN as a bound on `ts_ms`: a time, or None for no bound (earliest/latest)."""
    if text is None:
        return None
    from editstream.topics.offsets import parse_when

    when = parse_when(text)
    if when.kind == "time":
        return when.value
    if when.kind in ("earliest", "latest"):
        return None
    raise ValueError(f"{flag} {text!r}: the scorecard filters on the examples' settle time; "
                     "give a time (ISO-8601, a duration ago such as 2h, now), not an offset")


# --------------------------------------------------------------------------- names


def resolve_names(records: Sequence[core.Record], baseline: str | None,
                  candidates: Sequence[str] | None) -> tuple[str, list[str]]:
    """The baseline and the candidates to compare with it; ValueError (one line, naming the
    models present) for a name that has no record or when there is nothing to compare."""
    present = sorted({str(r["candidate"]) for r in records})
    listing = ", ".join(present) or "none"
    if baseline is None:
        baseline = core.default_baseline(present)
        if baseline is None:
            raise ValueError(f"no `served` or `noop` records to use as the baseline; name one "
                             f"with --baseline (models present: {listing})")
    elif baseline not in present:
        raise ValueError(f"--baseline {baseline}: no records of that model (models present: "
                         f"{listing})")
    if candidates:
        unknown = [c for c in candidates if c not in present]
        if unknown:
            raise ValueError(f"--candidate {', '.join(unknown)}: no records of that model "
                             f"(models present: {listing})")
        if baseline in candidates:
            raise ValueError(f"{baseline} is both the baseline and a candidate")
        return baseline, list(dict.fromkeys(candidates))
    chosen = core.default_candidates(present, baseline)
    if not chosen:
        raise ValueError(f"nothing to compare with {baseline}: it is the only model in the "
                         f"records")
    return baseline, chosen


# --------------------------------------------------------------------------- output


def render_scorecard(records: Iterable[core.Record], baseline: str | None,
                     candidates: Sequence[str] | None, settings: Settings, out_dir: Path, *,
                     from_ms: int | None = None, to_ms: int | None = None,
                     plot: bool = True) -> tuple[str, int]:
    """Build the scorecard of `records`, write scorecard.md / .json (/ .png) into `out_dir`,
    return (the Markdown, the exit code). `baseline`/`candidates` None: the defaults
    (`resolve_names`). ValueError when a name is unknown or no record is in the window."""
    all_records = list(records)
    # names are resolved on what the window keeps: a model with no record in it is unknown
    unique = core.deduplicate(all_records)
    inside = [r for r in unique if core.in_window(r, from_ms, to_ms)]
    if not inside:
        span = "" if from_ms is None and to_ms is None else " in the --from/--to window"
        raise ValueError(f"no eval records{span} ({len(unique)} read)")
    baseline, chosen = resolve_names(inside, baseline, candidates)
    card = core.build_scorecard(all_records, baseline=baseline, candidates=chosen,
                                settings=settings, from_ms=from_ms, to_ms=to_ms)
    text = core.to_markdown(card)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / FILES[0]).write_text(text)
    (out_dir / FILES[1]).write_bytes(orjson.dumps(card.to_dict(), option=orjson.OPT_INDENT_2))
    if plot:
        plot_scorecard(card, inside, out_dir / FILES[2])
    return text, card.exit_code


# the paired differences drawn (delta chrF is on a 0-100 scale: drawn divided by 100)
_PLOTTED = (("distance", "distance", 1.0), ("reversal_ratio", "reversal ratio", 1.0),
            ("kept_rate", "kept rate", 1.0), ("recall_rate", "recall", 1.0),
            ("delta_chrf", "Δ chrF / 100", 100.0), ("parsed", "parse rate", 1.0))


def plot_scorecard(card: core.Scorecard, records: Sequence[core.Record], path: Path) -> Path:
    """Left: each comparison's paired differences with their intervals (a forest plot; left
    of 0 is lower for the candidate). Right: each model's distance distribution."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    from editstream.dataset.report import _save

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=110)
    k = max(1, len(card.comparisons))
    height = 0.8 / k
    for j, cmp in enumerate(card.comparisons):
        ys, xs, lo, hi = [], [], [], []
        for i, (metric, _, scale) in enumerate(_PLOTTED):
            d = cmp.diffs.get(metric)
            if d is None:
                continue
            ys.append(i + (j - (k - 1) / 2) * height)
            xs.append(d.diff / scale)
            lo.append((d.diff - (d.ci_low if d.ci_low is not None else d.diff)) / scale)
            hi.append(((d.ci_high if d.ci_high is not None else d.diff) - d.diff) / scale)
        left.errorbar(xs, ys, xerr=[lo, hi], fmt="o", capsize=3,
                      label=f"{cmp.candidate} − {cmp.baseline}: {cmp.verdict}")
    left.axvline(0, color="black", linewidth=1)
    left.set_yticks(range(len(_PLOTTED)), [label for _, label, _ in _PLOTTED])
    left.invert_yaxis()
    conf = card.comparisons[0].confidence if card.comparisons else 0.95
    left.set(xlabel=f"paired difference of means, {conf:.0%} bootstrap interval",
             title="Candidate minus baseline")
    if card.comparisons:
        left.legend(fontsize=8)
    bins = [i / 40 for i in range(41)]
    for model in card.models:
        ds = [m["distance"] for r in records if r["candidate"] == model
              and (m := core.effective_metrics(r)) is not None and "distance" in m]
        if ds:
            right.hist(ds, bins=bins, histtype="step", linewidth=1.6, label=model)
    right.set(xlim=(0, 1), xlabel="normalized distance to the settled region (failed: "
              "region unchanged)", ylabel="examples", title="Distance per model")
    if card.models:
        right.legend(fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------- CLI


SCORECARD_SETTINGS = ("seed", *(f.name for f in fields(Settings)
                                if f.name.startswith("scorecard_")))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read eval records and print, per model and per language, n, parse rate, no-op "
        "rate, failures, distance (mean, median), exact rate, kept rate, recall, reversal "
        "ratio, delta chrF and latency p50/p99; then each candidate against the baseline, "
        "paired by example, with bootstrap intervals, and a verdict. Exit 0: ship; 1: do not "
        "ship; 2: too little data (fewer than --scorecard-min-pairs paired examples), no "
        "records, or an unknown model name. With several candidates the exit code is the "
        "worst: 1 if any says do not ship, else 2 if any has too little data, else 0.")
    parser.add_argument("--from", dest="from_", default=None, metavar="WHEN",
                        help="only examples settled at or after WHEN (ISO-8601, a duration "
                             "ago such as 7d, now)")
    parser.add_argument("--to", default=None, metavar="WHEN",
                        help="only examples settled before WHEN")
    parser.add_argument("--baseline", default=None, metavar="NAME",
                        help="the model candidates must beat (default: served, what editors "
                             "run now, if its records are there, else noop; noop when the "
                             "records hold no configured candidate)")
    parser.add_argument("--candidate", action="append", default=None, metavar="NAME",
                        help="a model to judge against the baseline (repeatable; default: "
                             "every configured candidate in the records, or, when there is "
                             "none, the other built-in: served against noop)")
    parser.add_argument("--results", action="append", default=None, metavar="FILE",
                        help="JSONL file of eval records instead of the broker (repeatable)")
    parser.add_argument("--live", action="store_true",
                        help=f"also read the `{LIVE_TOPIC}` topic: the served model on all "
                             f"live traffic (every split, with outcomes); its record of an "
                             f"example replaces eval-results' `served` one")
    parser.add_argument("--out", default="scorecard-output", metavar="DIR",
                        help="where scorecard.md, scorecard.json and scorecard.png go "
                             "(default: scorecard-output)")
    parser.add_argument("--no-plot", action="store_true", help="no scorecard.png")
    parser.add_argument("--read-timeout", type=float, default=60.0, metavar="S",
                        help="seconds allowed to read the topics to their end (default: 60)")
    settings_mod.add_arguments(parser, only=("broker", "topic_prefix", *SCORECARD_SETTINGS,
                                             *settings_mod.KAFKA_FIELDS))


def main_scorecard(ns: argparse.Namespace) -> int:
    settings = settings_mod.from_args(ns)
    from_ms, to_ms = window_ms(ns.from_, "--from"), window_ms(ns.to, "--to")
    if ns.results:
        if ns.live:
            raise ValueError("--live reads the broker; with --results give the files only")
        try:
            records, bad = read_files(ns.results)
        except OSError as exc:
            print(f"editstream scorecard: cannot read {exc.filename}: {exc.strerror}",
                  file=sys.stderr)
            return 2
        source = ", ".join(ns.results)
    elif not settings.broker:
        print("editstream scorecard: set --broker or EDITSTREAM_BROKER, or give "
              "--results FILE", file=sys.stderr)
        return 2
    else:
        from aiokafka.errors import KafkaError

        from agents.kafka import quiet_logger

        topics = [EVAL_TOPIC, LIVE_TOPIC] if ns.live else [EVAL_TOPIC]
        source = " + ".join(settings.topic(t) for t in topics) + f" at {settings.broker}"
        try:
            with quiet_logger(logging.getLogger("aiokafka.conn")):
                records, bad = asyncio.run(read_topics(settings, topics, ns.read_timeout))
        except KafkaError as exc:
            print(f"editstream scorecard: cannot read {source}: {type(exc).__name__} {exc}",
                  file=sys.stderr)
            return 2
    if bad:
        print(f"editstream scorecard: skipped {bad} record(s) of {source} that are not eval "
              f"records (not JSON, or no request_id/candidate)", file=sys.stderr)
    text, code = render_scorecard(records, ns.baseline, ns.candidate, settings, Path(ns.out),
                                  from_ms=from_ms, to_ms=to_ms, plot=not ns.no_plot)
    print(text)
    written = FILES[:2] if ns.no_plot else FILES
    print(f"read {len(records)} records from {source}; wrote "
          + ", ".join(str(Path(ns.out) / f) for f in written))
    return code
