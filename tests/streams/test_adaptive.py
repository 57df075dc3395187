"""Adaptive sampling: the predictive rule's posterior, the order-statistic interval math and
both stopping rules (the sampler against the real simulator is
tests/agents/test_adaptive_sampling.py)."""

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
    beta_binomial_pmf,
    binom_half_cdf,
    current_decision,
    final_decision_probabilities,
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
    """The interval rule with its own defaults (10 + 10s, 95 %)."""
    base: dict[str, Any] = {"cap": 50, "band_low": 0.05, "band_high": 0.6, "rule": "interval"}
    base.update(kw)
    return AdaptivePolicy(**base)


def predictive(**kw: Any) -> AdaptivePolicy:
    """The predictive rule as ``Settings()`` configures it (8 + 8s, 99 %, 5 valid needed)."""
    base: dict[str, Any] = {"cap": 50, "band_low": 0.05, "band_high": 0.6, "min_samples": 8,
                            "batch": 8, "confidence": 0.99, "min_valid": 5}
    base.update(kw)
    return AdaptivePolicy(**base)


def test_batches_tile_the_cap() -> None:
    assert policy().batches() == [(0, 10), (10, 10), (20, 10), (30, 10), (40, 10)]
    assert policy(min_samples=20, batch=15).batches() == [(0, 20), (20, 15), (35, 15)]
    assert policy(cap=8).batches() == [(0, 8)]
    assert policy(cap=23, batch=10).batches() == [(0, 10), (10, 10), (20, 3)]
    assert policy().looks == 4 and policy().alpha_per_look == pytest.approx(0.0125)


def test_clear_cases_stop_at_the_first_look() -> None:
    for p in (policy(), predictive()):
        first = p.batches()[0][1]
        assert replay([0.0] * 50, p) == (first, "trivial")
        assert replay([0.9] * 50, p) == (first, "noise")
        assert replay([0.3] * 50, p) == (first, "ideal")


def test_one_outlier_waits_for_the_second_batch() -> None:
    # at k=10 the per-look interval is [X_(1), X_(10)]; at 20 it is [X_(5), X_(16)]
    distances = [0.9] + [0.0] * 49
    assert replay(distances, policy()) == (20, "trivial")
    # predictive: 7 of 8 below band_low leave a 1.7 % chance that 42 more make it not
    # trivial (over the 1 % allowed); 15 of 16 leave less
    assert replay(distances, predictive()) == (16, "trivial")
    assert replay([0.9] + [0.3] * 49, predictive()) == (8, "ideal")  # 0.7 % left
    # two of eight on the far side: 5 % that the full run ends elsewhere, so draw on
    assert replay([0.9, 0.9] + [0.3] * 48, predictive()) == (16, "ideal")


def test_a_median_on_the_threshold_draws_everything() -> None:
    distances = [0.0, 0.3] * 25  # half trivial, half ideal: never decided
    assert replay(distances, policy()) == (50, None)
    assert replay(distances, predictive()) == (50, None)


def test_invalid_samples_do_not_count_and_hopeless_examples_stop() -> None:
    # the interval rule never decides without valid samples; the predictive one stops once
    # 5 valid samples are out of reach: 0 valid of 16 leaves a 4.8 % chance, 0 of 24 1 %
    assert replay([None] * 50, policy()) == (50, None)
    assert replay([None] * 50, predictive()) == (24, "unparsable")
    # one valid sample in the last two would do: it is decided at the cap, not before
    assert replay([None] * 50, predictive(min_valid=1)) == (50, "unparsable")
    # invalid samples slow the decision but do not change it
    assert replay([None, 0.3] * 25, predictive()) == (16, "ideal")


# --- the predictive rule's posterior ------------------------------------------------------------


def test_beta_binomial_hand_values() -> None:
    assert beta_binomial_pmf(4, 1.0, 1.0) == pytest.approx([0.2] * 5)  # uniform prior
    pmf = beta_binomial_pmf(3, 2.0, 3.0)  # textbook: C(3,k) B(k+2, 3-k+3) / B(2,3)
    assert pmf == pytest.approx([20 / 70, 24 / 70, 18 / 70, 8 / 70])
    assert sum(beta_binomial_pmf(40, 0.5, 30.5)) == pytest.approx(1.0)


def test_final_decision_is_certain_at_the_cap() -> None:
    # no samples left: the probability is 1 on the decision the drawn samples make, except
    # on an exact split, which counts for nothing
    assert final_decision_probabilities(0, 5, 0, 0, 0, 5)["ideal"] == 1.0
    assert final_decision_probabilities(3, 2, 0, 0, 0, 5)["trivial"] == 1.0
    assert final_decision_probabilities(0, 3, 0, 2, 0, 5)["unparsable"] == 1.0
    tie = final_decision_probabilities(3, 3, 0, 0, 0, 5)
    assert tie["trivial"] == tie["ideal"] == 0.0


@given(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6), st.integers(0, 6),
       st.integers(0, 30), st.integers(1, 8))
def test_final_decision_probabilities_are_a_sub_distribution(
    low: int, mid: int, high: int, invalid: int, future: int, need: int
) -> None:
    probs = final_decision_probabilities(low, mid, high, invalid, future, need)
    assert all(0.0 <= p <= 1.0 + 1e-9 for p in probs.values())
    assert sum(probs.values()) <= 1.0 + 1e-9


def test_predictive_stops_agree_with_the_full_run_at_the_confidence() -> None:
    """Calibration on students the rule has never seen: per example, a mixture of invalid,
    near and far answers with random weights. The share of early decisions that differ from
    the decision over all 50 samples stays under 1 - confidence (with slack for 600 draws),
    and every stop is the score stage's own decision over the samples drawn."""
    rng = random.Random(12)
    p = predictive()
    changed = drawn_total = 0
    examples = 600
    for _ in range(examples):
        w = [rng.random() ** 2 for _ in range(4)]  # invalid, below, inside, above the band
        run: list[float | None] = []
        for _ in range(50):
            cell = rng.choices(range(4), w)[0]
            run.append(None if cell == 0 else (rng.uniform(0, 0.049), rng.uniform(0.05, 0.6),
                                               rng.uniform(0.61, 1.0))[cell - 1])
        drawn, decided = replay(run, p)
        drawn_total += drawn
        valid_drawn = [d for d in run[:drawn] if d is not None]
        full = current_decision([d for d in run if d is not None], 0.05, 0.6, 5)
        if decided is not None:
            assert decided == current_decision(valid_drawn, 0.05, 0.6, 5)
            changed += decided != full
    assert changed / examples <= 0.02
    assert drawn_total / examples < 35  # and it does stop early on most of them


def test_policy_rejects_bad_values() -> None:
    for bad in ({"cap": 0}, {"batch": 0}, {"confidence": 1.0}, {"band_low": 0.7},
                {"rule": "vibes"}, {"min_valid": 0}):
        with pytest.raises(ValueError):
            policy(**bad)


def test_settings_fields_from_env() -> None:
    from streams.settings import from_env

    s = from_env({"EDITSTREAM_ADAPTIVE_SAMPLING": "off", "EDITSTREAM_ADAPTIVE_BATCH": "5",
                  "EDITSTREAM_ADAPTIVE_CONFIDENCE": "0.99"})
    assert (s.adaptive_sampling, s.adaptive_batch, s.adaptive_confidence) == (False, 5, 0.99)
