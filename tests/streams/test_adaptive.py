"""Adaptive sampling: the order-statistic interval math and the stopping rule (the sampler
against the real simulator is tests/agents/test_adaptive_sampling.py)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.adaptive import (
    AdaptivePolicy,
    band_of_interval,
    binom_half_cdf,
    median_interval,
    median_interval_ranks,
    replay,
)

# --- interval math ---------------------------------------------------------------------------


def test_binomial_cdf_hand_values() -> None:
    assert binom_half_cdf(10, 0) == pytest.approx(1 / 1024)
    assert binom_half_cdf(10, 1) == pytest.approx(11 / 1024)
    assert binom_half_cdf(20, 5) == pytest.approx(21700 / 2**20)
    assert binom_half_cdf(5, -1) == 0.0
    assert binom_half_cdf(5, 5) == 1.0


def test_ranks_of_textbook_intervals() -> None:
    # k=10, 95%: P(Bin <= 1) = 0.0107 -> [X_(2), X_(9)] covers 97.9%; [X_(3), X_(8)] only 89%
    assert median_interval_ranks(10, 0.05) == (2, 9)
    # k=20, 95%: P(Bin(20) <= 5) = 0.0207 -> [X_(6), X_(15)]
    assert median_interval_ranks(20, 0.05) == (6, 15)
    # too few values for the confidence: 2 * 0.5**5 = 0.0625 > 0.05
    assert median_interval_ranks(5, 0.05) is None
    assert median_interval_ranks(6, 0.05) == (1, 6)
    assert median_interval_ranks(0, 0.05) is None


@given(st.integers(1, 120), st.floats(0.001, 0.5))
def test_ranks_are_the_narrowest_with_enough_coverage(k: int, alpha: float) -> None:
    ranks = median_interval_ranks(k, alpha)
    if ranks is None:
        assert 2 * 0.5**k > alpha
        return
    lo, hi = ranks
    assert hi == k + 1 - lo and 1 <= lo <= hi <= k
    assert 1 - 2 * binom_half_cdf(k, lo - 1) >= 1 - alpha  # enough coverage
    if lo + 1 <= hi - 1:  # one rank narrower would not cover enough
        assert 1 - 2 * binom_half_cdf(k, lo) < 1 - alpha


def test_interval_coverage_by_simulation() -> None:
    """A 90% interval from 15 draws of a skewed distribution covers its median ~>= 90%."""
    rng = random.Random(1)
    median = math.log(2)  # of Exp(1)
    hits = 0
    trials = 4000
    for _ in range(trials):
        interval = median_interval([rng.expovariate(1.0) for _ in range(15)], 0.10)
        assert interval is not None
        hits += interval[0] <= median <= interval[1]
    assert hits / trials >= 0.89


@given(st.lists(st.floats(0, 1), min_size=1, max_size=60), st.floats(0.001, 0.3))
def test_sample_median_lies_in_the_interval(values: list[float], alpha: float) -> None:
    """Why the score stage always agrees with an early decision."""
    interval = median_interval(values, alpha)
    if interval is None:
        return
    ordered = sorted(values)
    k = len(ordered)
    med = (ordered[(k - 1) // 2] + ordered[k // 2]) / 2
    assert interval[0] <= med <= interval[1]


def test_band_of_interval_matches_decide_band_edges() -> None:
    low, high = 0.05, 0.6
    assert band_of_interval(0.0, 0.049, low, high) == "trivial"
    assert band_of_interval(0.0, 0.05, low, high) is None  # 0.05 is ideal in decide_band
    assert band_of_interval(0.05, 0.6, low, high) == "ideal"
    assert band_of_interval(0.61, 1.0, low, high) == "noise"
    assert band_of_interval(0.6, 1.0, low, high) is None
    assert band_of_interval(0.01, 0.7, low, high) is None


# --- stopping rule ----------------------------------------------------------------------------


def policy(**kw: Any) -> AdaptivePolicy:
    base: dict[str, Any] = {"cap": 50, "band_low": 0.05, "band_high": 0.6}
    base.update(kw)
    return AdaptivePolicy(**base)


def test_batches_tile_the_cap() -> None:
    assert policy().batches() == [(0, 10), (10, 10), (20, 10), (30, 10), (40, 10)]
    assert policy(min_samples=20, batch=15).batches() == [(0, 20), (20, 15), (35, 15)]
    assert policy(cap=8).batches() == [(0, 8)]
    assert policy(cap=23, batch=10).batches() == [(0, 10), (10, 10), (20, 3)]
    assert policy().looks == 4 and policy().alpha_per_look == pytest.approx(0.0125)


def test_clear_cases_stop_at_the_first_look() -> None:
    p = policy()
    assert replay([0.0] * 50, p) == (10, "trivial")
    assert replay([0.9] * 50, p) == (10, "noise")
    assert replay([0.3] * 50, p) == (10, "ideal")


def test_one_outlier_waits_for_the_second_batch() -> None:
    # at k=10 the per-look interval is [X_(1), X_(10)]; at 20 it is [X_(5), X_(16)]
    distances = [0.9] + [0.0] * 49
    assert replay(distances, policy()) == (20, "trivial")


def test_a_median_on_the_threshold_draws_everything() -> None:
    distances = [0.0, 0.3] * 25  # half trivial, half ideal: never decided
    assert replay(distances, policy()) == (50, None)


def test_policy_rejects_bad_values() -> None:
    for bad in ({"cap": 0}, {"batch": 0}, {"confidence": 1.0}, {"band_low": 0.7}):
        with pytest.raises(ValueError):
            policy(**bad)


def test_settings_fields_from_env() -> None:
    from streams.settings import from_env

    s = from_env({"EDITSTREAM_ADAPTIVE_SAMPLING": "off", "EDITSTREAM_ADAPTIVE_BATCH": "5",
                  "EDITSTREAM_ADAPTIVE_CONFIDENCE": "0.99"})
    assert (s.adaptive_sampling, s.adaptive_batch, s.adaptive_confidence) == (False, 5, 0.99)
