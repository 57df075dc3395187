"""Render the dashboard's data-quality panels to a PNG from a Prometheus server.

`render_prometheus(url, out)` queries the same series as the "Data quality" row of
`deploy/grafana/dashboards/editstream.json` and draws them with matplotlib (Agg backend, no
display needed), for reports and for machines without Grafana:

* distance distribution over time: a heatmap from `editstream_sample_distance_ratio_bucket`;
* band mix: scored examples per band over time, with totals;
* reversal ratio: p50 / p90 (histogram quantiles) and the mean;
* repair success: repair attempts per result over time, with the success share.

The time range is the span in which samples were scored (within `lookback_s` before `end`),
so a finished run is shown whole without choosing a range by hand.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

DISTANCE = "editstream_sample_distance_ratio"
REVERSAL = "editstream_sample_reversal_ratio"
BANDS = "editstream_scored_examples_total"
REPAIRS = "editstream_repair_attempts_total"
BAND_COLORS = {"trivial": "#8ab8ff", "ideal": "#56a64b", "noise": "#e0752d"}
REPAIR_COLORS = {"repaired": "#56a64b", "failed": "#e02f44"}


class PrometheusError(RuntimeError):
    pass


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    step: float  # one bar / heatmap column per step

    @property
    def window(self) -> str:
        """rate() window for ratios (quantiles, means): two steps, so no jump falls between
        windows; ratios do not mind the overlap."""
        return f"{max(1, round(2 * self.step))}s"


class Prometheus:
    """The two HTTP API calls the report needs."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def _get(self, path: str, params: dict[str, Any]) -> Any:
        resp = self.client.get(path, params=params)
        body = resp.json()
        if resp.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"{params.get('query')}: {body.get('error', resp.text)}")
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query", {"query": expr, "time": at})["result"])

    def query_range(self, expr: str, span: Span) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/query_range", {
            "query": expr, "start": span.start, "end": span.end, "step": span.step})["result"])


def find_span(prom: Prometheus, end: float, lookback_s: float) -> Span | None:
    """From a little before the first scored sample to a little after the last one."""
    lookback = f"{int(lookback_s)}s"
    raw = prom.query(f"{DISTANCE}_count[{lookback}]", end)  # raw samples of each target
    changes: list[float] = []
    gaps: list[float] = []  # between scrapes of one target: the scrape interval
    for series in raw:
        values = [(float(t), float(v)) for t, v in series["values"]]
        gaps.extend(b - a for (a, _), (b, _) in itertools.pairwise(values))
        changes.extend(t for (_, a), (t, b) in itertools.pairwise(values) if b > a)
    if not changes:
        return None
    scrape = statistics.median(gaps) if gaps else 15.0
    first, last = min(changes), max(changes)
    step = max(2 * scrape, (last - first) / 40)
    return Span(start=first - 2 * step, end=min(end, last + 3 * step), step=step)


def increments(prom: Prometheus, expr: str, span: Span) -> list[dict[str, Any]]:
    """Per-step increments of a summed counter, from differences of the scraped values.

    Exact, unlike `increase()` over step-long windows, which misses the jumps between two
    windows and extrapolates the rest. A value below the previous one is a restart: the
    new value is the increment. A series that appears later counts its first value."""
    before = Span(span.start - span.step, span.end, span.step)
    out = []
    for series in prom.query_range(expr, before):
        values = [(float(t), float(v)) for t, v in series["values"]]
        diffs = [(values[0][0], values[0][1] if values[0][0] > before.start + 1e-6 else 0.0)]
        diffs += [(t, b - a if b >= a else b) for (_, a), (t, b) in itertools.pairwise(values)]
        out.append({"metric": series["metric"],
                    "values": [[t, str(v)] for t, v in diffs if t > before.start + 1e-6]})
    return out


def _total(series: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {s["metric"].get(label, "?"): sum(_points(s)[1]) for s in series}


def _points(series: dict[str, Any], *, finite_only: bool = False
            ) -> tuple[list[float], list[float]]:
    pairs = [(float(t), float(v)) for t, v in series["values"]]
    if finite_only:
        pairs = [(t, v) for t, v in pairs if math.isfinite(v)]
    return [t for t, _ in pairs], [v for _, v in pairs]


def _times(xs: list[float]) -> list[datetime]:
    return [datetime.fromtimestamp(x, UTC) for x in xs]


def render_prometheus(url: str, out: Path, *, end: float | None = None,
                      lookback_s: float = 3 * 3600) -> Path:
    """Draw the data-quality panels from the Prometheus at `url` into the PNG `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    end = time.time() if end is None else end
    prom = Prometheus(url)
    try:
        span = find_span(prom, end, lookback_s)
        fig, axes = plt.subplots(2, 2, figsize=(14, 8.5), dpi=110, constrained_layout=True)
        (ax_heat, ax_band), (ax_rev, ax_rep) = axes
        if span is None:
            for ax in axes.flat:
                ax.text(0.5, 0.5, "no scored samples in range", ha="center", va="center",
                        transform=ax.transAxes)
            fig.suptitle(f"editstream data quality: no data at {url}")
        else:
            totals = _draw(prom, span, ax_heat, ax_band, ax_rev, ax_rep, fig)
            t0 = datetime.fromtimestamp(span.start, UTC).strftime("%Y-%m-%d %H:%M:%S")
            t1 = datetime.fromtimestamp(span.end, UTC).strftime("%H:%M:%S UTC")
            fig.suptitle(f"editstream data quality, {t0} to {t1}: {totals}",
                         fontsize=12)
            for ax in axes.flat:
                ax.xaxis_date()
                ax.set_xlim(_times([span.start, span.end]))
                ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=6))
                ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
                ax.grid(alpha=0.3)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        plt.close(fig)
    finally:
        prom.close()
    return out


def _draw(prom: Prometheus, span: Span, ax_heat: Any, ax_band: Any, ax_rev: Any,
          ax_rep: Any, fig: Any) -> str:
    from matplotlib.colors import PowerNorm
    from matplotlib.ticker import MaxNLocator

    w = span.window
    per = f"{span.step:.3g}s"
    whole = f"{max(1, round(span.end - span.start))}s"

    # --- distance distribution: per-bucket sample counts (de-cumulated `le` buckets)
    buckets = increments(prom, f"sum by (le) ({DISTANCE}_bucket)", span)
    finite = sorted((float(s["metric"]["le"]), s) for s in buckets
                    if s["metric"]["le"] != "+Inf")
    if finite:
        xs, _ = _points(finite[0][1])
        cum = [dict(zip(*_points(s), strict=True)) for _, s in finite]
        grid = []
        for i in range(len(finite)):
            row = [max(0.0, cum[i].get(x, 0.0) - (cum[i - 1].get(x, 0.0) if i else 0.0))
                   for x in xs]
            grid.append(row)
        edges_y = [0.0] + [le for le, _ in finite]
        edges_x = _times([xs[0] - span.step, *xs])  # the increment at x: (x - step, x]
        # square-root colour scale (as the dashboard's exponent 0.5): the few crowded
        # cells near 0 do not wash out the rest of the distribution
        mesh = ax_heat.pcolormesh(edges_x, edges_y, grid, cmap="Oranges", shading="flat",
                                  norm=PowerNorm(gamma=0.5))
        fig.colorbar(mesh, ax=ax_heat, label=f"samples per {per}")
    ax_heat.set_title("Sample distance distribution (normalized Levenshtein)")
    ax_heat.set_ylabel("distance")
    ax_heat.set_ylim(0, 1)

    # --- band mix over time, totals in the legend
    by_band = increments(prom, f"sum by (band) ({BANDS})", span)
    total = _total(by_band, "band")
    n_scored = sum(total.values())
    series = sorted(by_band,
                    key=lambda s: list(BAND_COLORS).index(s["metric"].get("band"))
                    if s["metric"].get("band") in BAND_COLORS else 99)
    bottom: dict[float, float] = {}
    for s in series:
        band = s["metric"].get("band", "?")
        xs, ys = _points(s)
        share = total.get(band, 0.0) / n_scored if n_scored else 0.0
        ax_band.bar(_times(xs), ys, width=-span.step / 86400 * 0.9, align="edge",
                    bottom=[bottom.get(x, 0.0) for x in xs], color=BAND_COLORS.get(band),
                    label=f"{band}: {total.get(band, 0):.0f} ({share:.0%})")
        for x, y in zip(xs, ys, strict=True):
            bottom[x] = bottom.get(x, 0.0) + y
    ax_band.set_title("Band mix (scored examples)")
    ax_band.set_ylabel(f"examples per {per}")
    ax_band.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_band.set_ylim(0, max([*bottom.values(), 1.0]) * 1.15)
    ax_band.legend(loc="upper left")

    # --- reversal ratio: quantiles and mean (markers: a short burst is one point)
    for label, expr, style in (
        ("p50", f"histogram_quantile(0.5, sum by (le) (rate({REVERSAL}_bucket[{w}])))", "o-"),
        ("p90", f"histogram_quantile(0.9, sum by (le) (rate({REVERSAL}_bucket[{w}])))", "s--"),
        ("mean", f"sum(rate({REVERSAL}_sum[{w}])) / sum(rate({REVERSAL}_count[{w}]))", "^:"),
    ):
        for s in prom.query_range(expr, span):
            # windows without samples are NaN: join the windows that have some
            xs, ys = _points(s, finite_only=True)
            ax_rev.plot(_times(xs), ys, style, label=label, markersize=4)
    overall = prom.query(f"sum(increase({REVERSAL}_sum[{whole}])) / "
                         f"sum(increase({REVERSAL}_count[{whole}]))", span.end)
    mean = float(overall[0]["value"][1]) if overall else math.nan
    ax_rev.set_title("Reversal ratio of student samples"
                     + (f" (mean over range {mean:.3f})" if math.isfinite(mean) else ""))
    ax_rev.set_ylabel("ratio")
    ax_rev.set_ylim(bottom=0)
    ax_rev.legend(loc="upper left")

    # --- repair attempts and success
    by_result = increments(prom, f"sum by (result) ({REPAIRS})", span)
    attempts = _total(by_result, "result")
    n_attempts = sum(attempts.values())
    bottom = {}
    for s in by_result:
        result = s["metric"].get("result", "?")
        xs, ys = _points(s)
        ax_rep.bar(_times(xs), ys, width=-span.step / 86400 * 0.9, align="edge",
                   bottom=[bottom.get(x, 0.0) for x in xs], color=REPAIR_COLORS.get(result),
                   label=f"{result}: {attempts.get(result, 0):.0f}")
        for x, y in zip(xs, ys, strict=True):
            bottom[x] = bottom.get(x, 0.0) + y
    success = attempts.get("repaired", 0.0) / n_attempts if n_attempts else None
    ax_rep.set_title("Repair attempts: success "
                     + (f"{success:.0%} of {n_attempts:.0f}" if success is not None
                        else "(no attempts in range)"))
    ax_rep.set_ylabel(f"attempts per {per}")
    ax_rep.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_rep.set_ylim(0, max([*bottom.values(), 1.0]) * 1.15)
    ax_rep.legend(loc="upper left")

    n_samples = sum(sum(_points(x)[1]) for x in increments(prom, f"sum({DISTANCE}_count)", span))
    return (f"{n_samples:.0f} samples, {n_scored:.0f} scored examples, "
            f"{n_attempts:.0f} repair attempts")
