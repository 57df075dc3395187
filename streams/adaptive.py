"""Adaptive sampling: stop drawing student samples once an example's band is decided.

The score stage decides an example from its valid samples: ``unparsable_samples`` when fewer
than ``min_valid`` are valid, otherwise the band of their median normalized Levenshtein
distance (``trivial`` < band_low <= ``ideal`` <= band_high < ``noise``). Drawing all N samples
decides every example; most are decided long before. Samples are drawn in batches, and after
each batch one of two rules says whether to stop:

``predictive`` (the default) answers the question a user of the data asks: would drawing the
other samples, up to N, change the decision? Each sample falls in one of four cells (invalid,
below band_low, inside the band, above band_high), and the decision over all N samples is a
function of the cell counts alone (a strict majority on one side puts the median there). With
a Jeffreys prior, the drawn counts give a Beta-binomial for how many of the remaining samples
are valid and, by the Dirichlet's neutrality, Beta-binomials for how many of those fall on
each side. Sampling stops when the decision over the samples drawn so far is the decision over
all N with posterior probability >= ``confidence``. Ambiguous outcomes (an even count split
exactly at a threshold, or an interval straddling both tails) count against stopping, so the
figure is a lower bound. Because the rule is Bayesian, optional stopping does not inflate it:
every stop is wrong with probability <= 1 - confidence under the model, whatever the look.
It also stops hopeless examples: when even the remaining samples are unlikely to bring the
valid count to ``min_valid``, the example is ``unparsable`` now, as it would be at N.

``interval`` (the earlier rule) bands on a distribution-free confidence interval for the
*population* median from order statistics,

    P(X_(l) <= median <= X_(k+1-l)) >= 1 - 2 * P(Bin(k, 1/2) <= l - 1),

Bonferroni-split over the looks. It answers a stricter question (is the student's median in
the band?) and so draws more: at least 8 valid samples before any stop.

Both rules stop only on the decision the score stage makes from the samples drawn, so the
record's band is always the band decided here.

Pure: no I/O, no clock; ``streams.sample`` does the drawing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from streams.score import decide_band, quantile

__all__ = [
    "RULES",
    "AdaptivePolicy",
    "band_of_interval",
    "beta_binomial_pmf",
    "binom_half_cdf",
    "current_decision",
    "final_decision_probabilities",
    "median_interval",
    "median_interval_ranks",
    "replay",
]

RULES = ("predictive", "interval")
# Jeffreys prior on every cell: it lets a handful of samples speak, and no cell is ever ruled
# out before it is seen
PRIOR = 0.5


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


@functools.lru_cache(maxsize=4096)
def beta_binomial_pmf(n: int, a: float, b: float) -> tuple[float, ...]:
    """P(X = k) for k in 0..n, X ~ BetaBinomial(n, a, b): successes in n more draws when the
    success rate's posterior is Beta(a, b)."""
    lbeta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return tuple(
        math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                 + math.lgamma(k + a) + math.lgamma(n - k + b) - math.lgamma(n + a + b) - lbeta)
        for k in range(n + 1))


def _at_least(pmf: Sequence[float], k: int) -> float:
    """P(X >= k) from a pmf over 0..n."""
    if k <= 0:
        return 1.0
    return math.fsum(pmf[k:]) if k < len(pmf) else 0.0


@functools.lru_cache(maxsize=65536)
def final_decision_probabilities(low: int, mid: int, high: int, invalid: int, future: int,
                                 min_valid: int) -> Mapping[str, float]:
    """Posterior probability that the decision over all samples (the drawn cell counts plus
    ``future`` more draws) is each of ``unparsable``, ``trivial``, ``ideal`` and ``noise``.

    Lower bounds: outcomes whose median could fall either side (an exact split) count for
    none, and ``ideal`` subtracts both tails as if they could not overlap."""
    valid = low + mid + high
    out = {"unparsable": 0.0, "trivial": 0.0, "ideal": 0.0, "noise": 0.0}
    for more, w in enumerate(beta_binomial_pmf(future, valid + PRIOR, invalid + PRIOR)):
        total = valid + more
        if total < min_valid:
            out["unparsable"] += w
            continue
        # within the valid samples, Dirichlet(low, mid, high) marginals: one side vs the rest
        p_low = beta_binomial_pmf(more, low + PRIOR, mid + high + 2 * PRIOR)
        p_high = beta_binomial_pmf(more, high + PRIOR, low + mid + 2 * PRIOR)
        majority = total // 2 + 1  # this many on one side puts the median there, odd or even
        out["trivial"] += w * _at_least(p_low, majority - low)
        out["noise"] += w * _at_least(p_high, majority - high)
        # ideal needs fewer than half on each side (for an even count, the exact half is a tie)
        half = (total - 1) // 2 + 1
        out["ideal"] += w * max(0.0, 1.0 - _at_least(p_low, half - low)
                                - _at_least(p_high, half - high))
    return MappingProxyType(out)  # cached: shared by every caller, so read-only


def current_decision(distances: Sequence[float], band_low: float, band_high: float,
                     min_valid: int) -> str:
    """What the score stage decides from these valid samples' distances."""
    if len(distances) < min_valid:
        return "unparsable"
    median = round(quantile(sorted(distances), 0.5), 6)
    return decide_band(median, band_low, band_high)


@dataclass(frozen=True)
class AdaptivePolicy:
    """When to look and when to stop. ``cap`` is N, the most samples ever drawn; ``min_valid``
    the valid samples the score stage needs (``streams.score.min_valid``)."""

    cap: int
    band_low: float
    band_high: float
    min_samples: int = 10
    batch: int = 10
    confidence: float = 0.95
    rule: str = "predictive"
    min_valid: int = 1

    def __post_init__(self) -> None:
        if self.cap < 1 or self.min_samples < 1 or self.batch < 1 or self.min_valid < 1:
            raise ValueError("cap, min_samples, batch and min_valid must be >= 1")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError("confidence must be in (0, 1)")
        if self.band_low > self.band_high:
            raise ValueError("band_low must be <= band_high")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, not {self.rule!r}")

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

    def decide(self, distances: Sequence[float], drawn: int | None = None) -> str | None:
        """The decision made by the samples seen so far (``distances`` of the valid ones, of
        ``drawn`` in all), or None to keep sampling."""
        if self.rule == "interval":
            interval = median_interval(distances, self.alpha_per_look)
            if interval is None:
                return None
            return band_of_interval(interval[0], interval[1], self.band_low, self.band_high)
        drawn = len(distances) if drawn is None else drawn
        now = current_decision(distances, self.band_low, self.band_high, self.min_valid)
        low = sum(1 for d in distances if d < self.band_low)
        high = sum(1 for d in distances if d > self.band_high)
        probs = final_decision_probabilities(
            low, len(distances) - low - high, high, drawn - len(distances),
            max(0, self.cap - drawn), self.min_valid)
        return now if probs[now] >= self.confidence else None


def replay(distances: Sequence[float | None], policy: AdaptivePolicy) -> tuple[int, str | None]:
    """Run the stopping rule over the first samples of a full run: (drawn, decided band).
    ``distances`` holds the full run's N samples in seed order, None for an invalid one.

    Because batch i of the adaptive run has the same seeds as samples [start, start + size)
    of the full run, this is exactly what the live sampler would have drawn and decided.
    """
    if len(distances) < policy.cap:
        raise ValueError("need the full run's cap distances")
    for start, size in policy.batches():
        drawn = start + size
        band = policy.decide([d for d in distances[:drawn] if d is not None], drawn)
        if band is not None:
            return drawn, band
    return policy.cap, None
