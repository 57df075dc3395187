"""The model scorecard: how each model did on settled examples, and whether a candidate may
replace a baseline.

Input: eval records (`eval-results` topic, `scorecard` topic or a JSONL file; the shape is
/work/notes/EVAL-RECORD.md: one record per (example, candidate) with the metrics of its
prediction against what the user really wrote). Output: a `Scorecard` holding

* per model (`candidate`), and per model and language: n, parse rate, no-op rate, failure
  reasons, distance mean and median, exact rate, kept rate, recall, reversal ratio, delta chrF,
  latency p50/p99 (and the served outcomes when the records carry them);
* per candidate against the baseline: paired differences (candidate minus baseline) of the mean
  of each metric over the examples both were scored on, with bootstrap confidence intervals
  that resample examples, and a verdict.

Conventions, shared with the eval stage:

* A failed prediction counts as the region left unchanged (the editor would show nothing): its
  metrics are the `unchanged_metrics` it carries (`effective_metrics`). The per-model means use
  the same rule, so a model's mean distance is the one the paired comparison starts from;
  the parse rate says how many of them were failures.
* The no-op rate is over the predictions that parsed (a failure is not a no-op answer).
* The same (request_id, candidate) read twice (at-least-once delivery, a re-run): the last one
  read is kept, as log compaction of the topic (keyed by request id) would keep it.
* `--from`/`--to` bound `ts_ms` (the example's settle time): from inclusive, to exclusive, as
  every WHEN range of the command line.

The verdict (every threshold a setting, `scorecard_*` in streams/settings.py): with fewer than
`scorecard_min_pairs` paired examples, "too little data"; otherwise "ship" iff the upper end of
the distance difference's interval is below `scorecard_max_distance_ci_high` (0: the candidate
is closer to what users wrote, with the chosen confidence), the reversal ratio is not higher
than the baseline's by more than `scorecard_max_reversal_increase` and the parse rate not lower
by more than `scorecard_max_parse_rate_drop` (both on the paired means, point estimates: these
are guards against a regression, the interval of the main criterion carries the uncertainty).

Pure: no Kafka, no HTTP, no files; numpy and scipy for the statistics.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import stats

from streams.settings import Settings

# The metrics of `streams.scoring.SampleScore.to_dict()`, in table order.
METRICS = ("distance", "exact", "kept_rate", "recall_rate", "reversal_ratio", "delta_chrf")
# Compared in pairs: whether it parsed, then the metrics.
PAIRED = ("parsed", *METRICS)
BUILTINS = ("noop", "served")

Verdict = Literal["ship", "do not ship", "too little data"]
EXIT_CODES: dict[Verdict, int] = {"ship": 0, "do not ship": 1, "too little data": 2}

Record = Mapping[str, Any]


# --------------------------------------------------------------------------- records


def effective_metrics(record: Record) -> dict[str, float] | None:
    """The metrics that count for `record`: its prediction's, or, when it failed, those of the
    region left unchanged (`unchanged_metrics`). Booleans (`exact`) as 0/1. None when the
    record carries neither (it cannot be scored)."""
    raw = record.get("metrics")
    if raw is None and record.get("predicted_region") is None:
        raw = record.get("unchanged_metrics")
    if not isinstance(raw, Mapping):
        return None
    out: dict[str, float] = {}
    for key in METRICS:
        value = raw.get(key)
        if isinstance(value, bool | int | float):
            out[key] = float(value)
    return out


def parsed(record: Record) -> bool:
    return record.get("predicted_region") is not None


def deduplicate(records: Iterable[Record]) -> list[Record]:
    """One record per (request_id, candidate): the last one read, at the position of the first
    (so the order stays the order of arrival)."""
    kept: dict[tuple[str, str], Record] = {}
    for rec in records:
        kept[(str(rec["request_id"]), str(rec["candidate"]))] = rec
    return list(kept.values())


def in_window(record: Record, from_ms: int | None, to_ms: int | None) -> bool:
    """`from_ms <= ts_ms < to_ms`; a record without `ts_ms` only passes when no bound is set."""
    if from_ms is None and to_ms is None:
        return True
    ts = record.get("ts_ms")
    if not isinstance(ts, int):
        return False
    return (from_ms is None or ts >= from_ms) and (to_ms is None or ts < to_ms)


def valid(record: Any) -> str | None:
    """Why `record` is not an eval record this module can use (None: it is)."""
    if not isinstance(record, Mapping):
        return "not a JSON object"
    for key in ("request_id", "candidate"):
        if not isinstance(record.get(key), str) or not record[key]:
            return f"no {key}"
    return None


# --------------------------------------------------------------------------- per model


@dataclass(frozen=True)
class ModelStats:
    """One model's figures over a set of records (all of them, or one language's)."""

    n: int
    parsed: int
    parse_rate: float
    noop_rate: float | None  # over the parsed predictions
    failures: dict[str, int]
    means: dict[str, float | None]  # METRICS, effective metrics (see the module docstring)
    distance_median: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    scored: int  # records with effective metrics
    outcomes: dict[str, int] = field(default_factory=dict)  # served records only
    undone: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n, "parsed": self.parsed, "parse_rate": _r(self.parse_rate),
            "noop_rate": _r(self.noop_rate), "failures": dict(sorted(self.failures.items())),
            "scored": self.scored,
            **{f"{k}_mean": _r(v) for k, v in self.means.items()},
            "distance_median": _r(self.distance_median),
            "latency_p50_ms": _r(self.latency_p50_ms), "latency_p99_ms": _r(self.latency_p99_ms),
            **({"outcomes": dict(sorted(self.outcomes.items())), "undone": self.undone}
               if self.outcomes else {}),
        }


def model_stats(records: Sequence[Record]) -> ModelStats:
    n = len(records)
    ok = [r for r in records if parsed(r)]
    noops = sum(1 for r in ok if r.get("noop") is True)
    failures = Counter(str((r.get("failure") or {}).get("reason") or "unknown")
                       for r in records if not parsed(r))
    eff = [m for m in (effective_metrics(r) for r in records) if m is not None]
    means: dict[str, float | None] = {}
    for key in METRICS:
        values = [m[key] for m in eff if key in m]
        # fsum: exactly rounded, so the figure does not depend on the order records were read
        means[key] = math.fsum(values) / len(values) if values else None
    distances = [m["distance"] for m in eff if "distance" in m]
    latencies = [float(r["latency_ms"]) for r in records
                 if isinstance(r.get("latency_ms"), int | float)]
    outcomes = Counter(str(r["outcome"]) for r in records if r.get("outcome") is not None)
    return ModelStats(
        n=n, parsed=len(ok), parse_rate=len(ok) / n if n else 0.0,
        noop_rate=noops / len(ok) if ok else None, failures=dict(failures), means=means,
        distance_median=float(np.median(distances)) if distances else None,
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else None,
        latency_p99_ms=float(np.percentile(latencies, 99)) if latencies else None,
        scored=len(eff), outcomes=dict(outcomes),
        undone=sum(1 for r in records if r.get("undone") is True),
    )


# --------------------------------------------------------------------------- paired


@dataclass(frozen=True)
class PairedDiff:
    """The mean of one metric over the paired examples for each side, and their difference
    (candidate minus baseline) with its bootstrap interval (None below two pairs)."""

    metric: str
    baseline: float
    candidate: float
    diff: float
    ci_low: float | None
    ci_high: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "baseline": _r(self.baseline),
                "candidate": _r(self.candidate), "diff": _r(self.diff),
                "ci_low": _r(self.ci_low), "ci_high": _r(self.ci_high)}


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Comparison:
    candidate: str
    baseline: str
    n_paired: int
    candidate_only: int  # the candidate's examples the baseline has no (scorable) record of
    baseline_only: int
    diffs: dict[str, PairedDiff]
    verdict: Verdict
    checks: list[Check]
    confidence: float
    method: str

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "baseline": self.baseline,
                "n_paired": self.n_paired, "candidate_only": self.candidate_only,
                "baseline_only": self.baseline_only, "verdict": self.verdict,
                "exit_code": self.exit_code, "confidence": self.confidence,
                "ci_method": self.method,
                "diffs": {k: d.to_dict() for k, d in self.diffs.items()},
                "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail}
                           for c in self.checks]}


def paired_rows(candidate: Sequence[Record], baseline: Sequence[Record]
                ) -> tuple[np.ndarray[Any, np.dtype[np.float64]],
                           np.ndarray[Any, np.dtype[np.float64]], int, int]:
    """(candidate values, baseline values, candidate-only, baseline-only): two arrays of shape
    (len(PAIRED), pairs), one column per request id both sides have complete metrics for, in
    request id order (so the bootstrap's draws do not depend on the order records were read
    in: partitions interleave differently on every read)."""
    def rows(records: Sequence[Record]) -> dict[str, list[float]]:
        out = {}
        for r in records:
            m = effective_metrics(r)
            if m is not None and all(k in m for k in METRICS):
                out[str(r["request_id"])] = [1.0 if parsed(r) else 0.0,
                                             *(m[k] for k in METRICS)]
        return out

    cand, base = rows(candidate), rows(baseline)
    ids = sorted(i for i in base if i in cand)
    shape = (len(PAIRED), len(ids))
    c = np.array([cand[i] for i in ids], dtype=np.float64).T.reshape(shape)
    b = np.array([base[i] for i in ids], dtype=np.float64).T.reshape(shape)
    return c, b, len(cand) - len(ids), len(base) - len(ids)


def bootstrap_ci(diffs: np.ndarray[Any, np.dtype[np.float64]], *, resamples: int,
                 confidence: float, method: str, seed: int
                 ) -> tuple[np.ndarray[Any, np.dtype[np.float64]],
                            np.ndarray[Any, np.dtype[np.float64]]]:
    """Interval of the mean of each row of `diffs` (metrics x examples), resampling examples:
    scipy.stats.bootstrap, one seeded generator, the same resampled examples for every row (a
    batch dimension of scipy's). A constant row (every pair equal, e.g. both always parse) has
    the interval [c, c]; scipy's BCa would answer NaN and warn there."""
    k, n = diffs.shape
    low = np.full(k, np.nan)
    high = np.full(k, np.nan)
    if n < 2:
        return low, high
    constant = np.all(diffs == diffs[:, :1], axis=1)
    low[constant] = high[constant] = diffs[constant, 0]
    varying = diffs[~constant]
    if len(varying):
        # resamples per batch such that one batch holds ~4M values (memory, not speed)
        batch = max(1, 4_000_000 // (n * len(varying)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # BCa's near-degenerate rows
            res = stats.bootstrap((varying,), np.mean, axis=-1, n_resamples=resamples,
                                  confidence_level=confidence, method=method, batch=batch,
                                  vectorized=True, rng=np.random.default_rng(seed))
        lo = np.asarray(res.confidence_interval.low, dtype=np.float64)
        hi = np.asarray(res.confidence_interval.high, dtype=np.float64)
        low[~constant], high[~constant] = lo, hi
    return low, high


def compare(candidate_records: Sequence[Record], baseline_records: Sequence[Record], *,
            candidate: str, baseline: str, settings: Settings) -> Comparison:
    """Candidate against baseline, paired by request id, and the verdict (module docstring)."""
    c, b, c_only, b_only = paired_rows(candidate_records, baseline_records)
    n = c.shape[1]
    d = c - b
    low, high = bootstrap_ci(d, resamples=settings.scorecard_bootstrap_resamples,
                             confidence=settings.scorecard_confidence,
                             method=settings.scorecard_ci_method, seed=settings.seed)
    diffs = {}
    for i, metric in enumerate(PAIRED):
        if n == 0:
            continue
        diffs[metric] = PairedDiff(metric, float(b[i].mean()), float(c[i].mean()),
                                   float(d[i].mean()), _finite(low[i]), _finite(high[i]))
    checks = verdict_checks(diffs, settings)
    verdict: Verdict
    if n < settings.scorecard_min_pairs:
        verdict = "too little data"
        checks = [Check("enough pairs", False,
                        f"{n} paired examples, fewer than scorecard_min_pairs "
                        f"({settings.scorecard_min_pairs})"), *checks]
    else:
        verdict = "ship" if all(ch.passed for ch in checks) else "do not ship"
    return Comparison(candidate, baseline, n, c_only, b_only, diffs, verdict, checks,
                      settings.scorecard_confidence, settings.scorecard_ci_method)


def verdict_checks(diffs: Mapping[str, PairedDiff], settings: Settings) -> list[Check]:
    """The three parts of the shipping rule, each with the figures it was decided on."""
    if not diffs:
        return []
    dist, rev, parse = diffs["distance"], diffs["reversal_ratio"], diffs["parsed"]
    bound = settings.scorecard_max_distance_ci_high
    ci = f"[{_f(dist.ci_low)}, {_f(dist.ci_high)}]"
    return [
        Check("distance lower", dist.ci_high is not None and dist.ci_high < bound,
              f"distance difference {dist.diff:+.4f}, {settings.scorecard_confidence:.0%} "
              f"interval {ci}: its upper end must be below {bound:g}"),
        Check("reversal ratio not higher",
              rev.diff <= settings.scorecard_max_reversal_increase + 1e-12,
              f"reversal ratio {rev.candidate:.4f} vs {rev.baseline:.4f} "
              f"({rev.diff:+.4f}; at most +{settings.scorecard_max_reversal_increase:g})"),
        Check("parse rate not lower",
              parse.diff >= -settings.scorecard_max_parse_rate_drop - 1e-12,
              f"parse rate {parse.candidate:.1%} vs {parse.baseline:.1%} "
              f"({parse.diff * 100:+.1f} points; at most "
              f"-{settings.scorecard_max_parse_rate_drop * 100:g})"),
    ]


# --------------------------------------------------------------------------- scorecard


@dataclass(frozen=True)
class Scorecard:
    models: dict[str, ModelStats]
    languages: dict[str, dict[str, ModelStats]]  # model -> language -> stats
    comparisons: list[Comparison]
    records: int  # after deduplication and the time window
    duplicates: int
    outside_window: int
    from_ms: int | None = None
    to_ms: int | None = None

    @property
    def exit_code(self) -> int:
        """1 if any comparison says do not ship, else 2 if any has too little data, else 0
        (no comparison: 2, nothing was decided)."""
        codes = {c.exit_code for c in self.comparisons}
        if not codes:
            return 2
        return 1 if 1 in codes else 2 if 2 in codes else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "duplicates_dropped": self.duplicates,
            "outside_window": self.outside_window, "from_ms": self.from_ms,
            "to_ms": self.to_ms, "exit_code": self.exit_code,
            "models": {m: s.to_dict() for m, s in self.models.items()},
            "languages": {m: {lang: s.to_dict() for lang, s in by.items()}
                          for m, by in self.languages.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def default_baseline(names: Iterable[str]) -> str | None:
    """`served` (what editors run today: the model a candidate would replace) when present,
    else `noop`; None when neither is. With no configured candidate in the records, `noop`:
    the question left is whether the served model beats showing nothing."""
    present = set(names)
    order = BUILTINS[::-1] if present - set(BUILTINS) else BUILTINS
    return next((b for b in order if b in present), None)


def default_candidates(names: Iterable[str], baseline: str) -> list[str]:
    """Every configured candidate (not a built-in) but the baseline; with none, the other
    built-in (e.g. served against noop: is the live model better than showing nothing)."""
    present = sorted(set(names) - {baseline})
    configured = [n for n in present if n not in BUILTINS]
    return configured or [n for n in present if n in BUILTINS]


def build_scorecard(records: Iterable[Record], *, baseline: str, candidates: Sequence[str],
                    settings: Settings, from_ms: int | None = None,
                    to_ms: int | None = None) -> Scorecard:
    """Deduplicate, keep the window, summarise every model present and compare each of
    `candidates` with `baseline`. Unknown names are the caller's to refuse (`names`)."""
    raw = list(records)
    unique = deduplicate(raw)
    kept = [r for r in unique if in_window(r, from_ms, to_ms)]
    by_model: dict[str, list[Record]] = {}
    for r in kept:
        by_model.setdefault(str(r["candidate"]), []).append(r)
    models = {m: model_stats(rs) for m, rs in sorted(by_model.items())}
    languages: dict[str, dict[str, ModelStats]] = {}
    for m, rs in sorted(by_model.items()):
        by_lang: dict[str, list[Record]] = {}
        for r in rs:
            by_lang.setdefault(str(r.get("language") or "other"), []).append(r)
        languages[m] = {lang: model_stats(v) for lang, v in sorted(by_lang.items())}
    comparisons = [compare(by_model.get(c, []), by_model.get(baseline, []), candidate=c,
                           baseline=baseline, settings=settings) for c in candidates]
    return Scorecard(models, languages, comparisons, records=len(kept),
                     duplicates=len(raw) - len(unique), outside_window=len(unique) - len(kept),
                     from_ms=from_ms, to_ms=to_ms)


# --------------------------------------------------------------------------- text


_COLUMNS = ("n", "parse", "no-op", "dist mean", "dist median", "exact", "kept", "recall",
            "reversal", "Δ chrF", "p50 ms", "p99 ms", "failures")


def _row(name: str, s: ModelStats) -> list[str]:
    m = s.means
    return [name, str(s.n), _pct(s.parse_rate), _pct(s.noop_rate), _f(m["distance"]),
            _f(s.distance_median), _pct(m["exact"]), _f(m["kept_rate"]), _f(m["recall_rate"]),
            _f(m["reversal_ratio"]), _f(m["delta_chrf"]), _ms(s.latency_p50_ms),
            _ms(s.latency_p99_ms),
            ", ".join(f"{k} {v}" for k, v in sorted(s.failures.items())) or "-"]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
            *(line(r) for r in rows)]


def to_markdown(card: Scorecard) -> str:
    """The scorecard as Markdown (also what the command prints: pipe tables read fine in a
    terminal)."""
    out = ["# Model scorecard", ""]
    window = ""
    if card.from_ms is not None or card.to_ms is not None:
        window = f", ts_ms in [{card.from_ms or '-inf'}, {card.to_ms or '+inf'})"
    out.append(f"{card.records} records{window}; {card.duplicates} duplicates dropped "
               f"(last read kept); {card.outside_window} outside the window.")
    out.append("Means count a failed prediction as the region left unchanged; no-op is over "
               "parsed predictions.")
    out += ["", "## Per model", ""]
    out += _table(("model", *_COLUMNS), [_row(m, s) for m, s in card.models.items()])
    served = {m: s for m, s in card.models.items() if s.outcomes}
    if served:
        out += ["", "Outcomes (served records): " + "; ".join(
            f"{m}: " + ", ".join(f"{k} {v}" for k, v in sorted(s.outcomes.items()))
            + f", undone {s.undone}" for m, s in served.items())]
    out += ["", "## Per model and language", ""]
    out += _table(("model", "language", *_COLUMNS),
                  [[m, *_row(lang, s)] for m, by in card.languages.items()
                   for lang, s in by.items()])
    for cmp in card.comparisons:
        out += ["", f"## {cmp.candidate} vs {cmp.baseline}", ""]
        out.append(f"{cmp.n_paired} paired examples ({cmp.candidate_only} only "
                   f"{cmp.candidate}, {cmp.baseline_only} only {cmp.baseline}); differences "
                   f"are {cmp.candidate} minus {cmp.baseline}, {cmp.confidence:.0%} bootstrap "
                   f"intervals ({cmp.method}) resampling examples.")
        if cmp.diffs:
            out.append("")
            out += _table(("metric", cmp.baseline, cmp.candidate, "difference",
                           f"{cmp.confidence:.0%} CI"),
                          [[d.metric, _f(d.baseline, 4), _f(d.candidate, 4), f"{d.diff:+.4f}",
                            f"[{_f(d.ci_low, 4)}, {_f(d.ci_high, 4)}]"]
                           for d in cmp.diffs.values()])
        out += ["", f"**Verdict: {cmp.verdict.upper()}** (exit {cmp.exit_code})", ""]
        out += [f"- [{'x' if c.passed else ' '}] {c.name}: {c.detail}" for c in cmp.checks]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- helpers


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _ms(x: float | None) -> str:
    """Milliseconds: whole ones, a decimal below 10 (a local server answers in under one)."""
    return "-" if x is None else f"{x:.1f}" if x < 10 else f"{x:.0f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"
