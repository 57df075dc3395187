"""Adaptive sampling: stop drawing student samples once an example's band is decided.

The score stage bands an example by the median normalized Levenshtein distance of its
samples (``trivial`` < band_low <= ``ideal`` <= band_high < ``noise``). Most examples are far
from both thresholds, so their band is clear long before all N samples are in. We draw in
batches and, after each batch of k samples, compute a distribution-free confidence interval
for the *median* of the sample distribution from order statistics:

    P(X_(l) <= median <= X_(k+1-l)) >= 1 - 2 * P(Bin(k, 1/2) <= l - 1)

(exact for continuous distributions, conservative with ties). When the interval lies entirely
below band_low, above band_high, or inside [band_low, band_high], the band is decided and
sampling stops; otherwise the next batch is drawn, up to the cap N.

Repeated looks: each example is looked at up to ``looks`` times before the cap, so the
per-look error is ``(1 - confidence) / looks`` (Bonferroni): the chance that *any* look's
interval misses the median is at most ``1 - confidence``.

Consistency with the score stage: the sample median of the drawn samples (what
``streams.score`` bands on) lies inside the interval, so the score stage's band over the drawn
samples always equals the band decided here.

Pure: no I/O, no clock; ``streams.sample`` does the drawing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "AdaptivePolicy",
    "band_of_interval",
    "binom_half_cdf",
    "median_interval",
    "median_interval_ranks",
    "replay",
]


def binom_half_cdf(k: int, r: int) -> float:
    """P(Bin(k, 1/2) <= r), exactly (k is small: a few hundred at most)."""
    if r < 0:
        return 0.0
    if r >= k:
        return 1.0
    return sum(math.comb(k, i) for i in range(r + 1)) / (1 << k)  # k >= 1 here


@functools.lru_cache(maxsize=1024)
def median_interval_ranks(k: int, alpha: float) -> tuple[int, int] | None:
    """1-based ranks (l, u = k + 1 - l) of the narrowest symmetric order-statistic interval
    covering the median with probability >= 1 - alpha; None if even [X_(1), X_(k)] is too
    short (k too small for that alpha)."""
    if k < 1 or not 0.0 < alpha < 1.0:
        return None
    best: int | None = None
    # coverage of [X_(l), X_(k+1-l)] is 1 - 2 * P(Bin <= l - 1); it shrinks as l grows
    for lo in range(1, (k + 1) // 2 + 1):
        if 2 * binom_half_cdf(k, lo - 1) <= alpha:
            best = lo
        else:
            break
    return None if best is None else (best, k + 1 - best)


def median_interval(values: Sequence[float], alpha: float) -> tuple[float, float] | None:
    """The (1 - alpha) distribution-free confidence interval for the median of ``values``'
    distribution, or None when there are too few values for that confidence."""
    ranks = median_interval_ranks(len(values), alpha)
    if ranks is None:
        return None
    ordered = sorted(values)
    return ordered[ranks[0] - 1], ordered[ranks[1] - 1]


def band_of_interval(lo: float, hi: float, band_low: float, band_high: float) -> str | None:
    """The band every median in [lo, hi] falls in (same rules as ``streams.score``), or None
    when the interval straddles a threshold."""
    if hi < band_low:
        return "trivial"
    if lo > band_high:
        return "noise"
    if band_low <= lo and hi <= band_high:
        return "ideal"
    return None


@dataclass(frozen=True)
class AdaptivePolicy:
    """When to look and when to stop. ``cap`` is N, the most samples ever drawn."""

    cap: int
    band_low: float
    band_high: float
    min_samples: int = 10
    batch: int = 10
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.cap < 1 or self.min_samples < 1 or self.batch < 1:
            raise ValueError("cap, min_samples and batch must be >= 1")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("confidence must be in (0, 1)")
        if self.band_low > self.band_high:
            raise ValueError("band_low must be <= band_high")

    def batches(self) -> list[tuple[int, int]]:
        """(first sample index, size) of every batch, in order; they tile [0, cap)."""
        out = []
        start = 0
        size = min(self.min_samples, self.cap)
        while start < self.cap:
            out.append((start, size))
            start += size
            size = min(self.batch, self.cap - start)
        return out

    @property
    def looks(self) -> int:
        """Looks that can stop early: after every batch but the last (the cap stops anyway)."""
        return max(1, len(self.batches()) - 1)

    @property
    def alpha_per_look(self) -> float:
        return (1.0 - self.confidence) / self.looks

    def decide(self, distances: Sequence[float]) -> str | None:
        """The band decided by the samples seen so far, or None to keep sampling."""
        interval = median_interval(distances, self.alpha_per_look)
        if interval is None:
            return None
        return band_of_interval(interval[0], interval[1], self.band_low, self.band_high)


def replay(distances: Sequence[float], policy: AdaptivePolicy) -> tuple[int, str | None]:
    """Run the stopping rule over the first samples of a full run: (drawn, decided band).

    Because batch i of the adaptive run has the same seeds as samples [start, start + size)
    of the full run, this is exactly what the live sampler would have drawn and decided.
    """
    if len(distances) < policy.cap:
        raise ValueError("need the full run's cap distances")
    for start, size in policy.batches():
        drawn = start + size
        band = policy.decide(distances[:drawn])
        if band is not None:
            return drawn, band
    return policy.cap, None
