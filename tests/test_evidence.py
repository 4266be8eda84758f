"""Paired evidence over origins: the centre and its interval, paired verdicts, the ranking."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import stats

from moetrace.evidence import (
    MIN_ORIGINS,
    MIN_PAIRS,
    compare,
    estimate,
    mean_interval,
    origin_means,
    overlap_lag,
    rank,
)


def test_the_centre_is_the_mean_over_origins_of_the_layer_means():
    values = np.array([[0.01, 0.03, np.nan],
                       [0.02, 0.02, 0.08],
                       [0.05, np.nan, np.nan]])
    mask = np.array([[True, True, True], [True, True, False], [False, True, True]])
    means, used = origin_means(values, mask)
    # origin 0: (0.01 + 0.03) / 2 (layer 2 not scored); 1: (0.02 + 0.02) / 2 (layer 2 masked);
    # origin 2: nothing left (layer 0 masked, the others not scored)
    assert means[:2] == pytest.approx([0.02, 0.02]) and used.tolist() == [True, True, False]
    found = estimate(values, mask)
    assert found.centre == pytest.approx(0.02)
    assert (found.origins, found.pairs) == (2, 4)


def test_the_interval_is_students_t_over_origins_without_overlap():
    series = np.array([0.012, 0.015, 0.011, 0.019, 0.013, 0.016])
    mean, lower, upper = mean_interval(series, lag=0, level=0.95)
    half = stats.t.ppf(0.975, 5) * series.std(ddof=1) / np.sqrt(6)
    assert mean == pytest.approx(series.mean())
    assert (lower, upper) == pytest.approx((series.mean() - half, series.mean() + half))


def test_overlapping_horizons_enter_the_variance_with_bartlett_weights():
    series = np.array([1.0, 2.0, 4.0, 3.0, 5.0])
    dev = series - series.mean()
    # lag 1: gamma_0 + 2 * (1 - 1/2) * gamma_1, over n - 1, then / n
    total = dev @ dev + 2 * 0.5 * (dev[:-1] @ dev[1:])
    half = stats.t.ppf(0.975, 4) * np.sqrt(total / 4 / 5)
    _, lower, upper = mean_interval(series, lag=1)
    assert (lower, upper) == pytest.approx((series.mean() - half, series.mean() + half))
    # origins 300 steps apart: a 1,000-step horizon overlaps the next 3, a 300-step none
    steps = np.arange(0, 3000, 300)
    assert overlap_lag(steps, 1000) == 3 and overlap_lag(steps, 300) == 0
    assert overlap_lag(np.array([10, 20, 500]), 100) == 1 and overlap_lag(np.array([7]), 50) == 0


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, (7, 3), elements=st.floats(0, 2)),
       arrays(bool, (7, 3)), st.integers(0, 6))
def test_the_centre_always_lies_inside_its_interval(values, mask, lag):
    found = estimate(values, mask, steps=np.arange(7) * 100, horizon=100 * (lag + 1))
    if found.origins == 0:
        assert np.isnan(found.centre)
    elif found.origins == 1:
        assert np.isnan(found.lower) and np.isnan(found.upper)
    else:
        assert found.lower - 1e-15 <= found.centre <= found.upper + 1e-15


def test_a_paired_difference_is_the_difference_of_the_centres_on_common_pairs():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.01, 0.02, (8, 4)), rng.uniform(0.01, 0.02, (8, 4))
    a[0, 1] = np.nan  # not scored: left out of both
    mask = np.ones((8, 4), dtype=bool)
    found = compare(a, b, mask)
    common = mask & np.isfinite(a)
    assert found.mean_difference == pytest.approx(
        estimate(a, common).centre - estimate(b, common).centre)
    assert (found.origins, found.pairs) == (8, 31)


def test_clearly_lower_errors_are_better_and_noise_is_no_clear_difference():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.01, 0.03, (12, 3))
    mask = np.ones((12, 3), dtype=bool)
    lower = base * 0.8
    assert compare(lower, base, mask).verdict == "better"
    assert compare(base, lower, mask).verdict == "worse"
    noisy = base + rng.normal(0, 0.002, base.shape)
    noisy -= noisy.mean() - base.mean()  # same centre: no difference to find
    assert compare(noisy, base, mask).verdict == "no clear difference"


def test_the_layers_of_one_origin_are_not_independent_evidence():
    """Many layers that move together at few origins: a pair-level test would call the
    difference certain; over origins it is not."""
    shift = np.array([0.004, -0.003, 0.005, -0.002, 0.003, 0.004])  # one per origin
    a = np.full((6, 64), 0.02) + shift[:, None]  # every layer of an origin alike
    b = np.full((6, 64), 0.02)
    mask = np.ones_like(a, dtype=bool)
    pooled = stats.ttest_1samp((a - b).ravel(), 0.0).pvalue
    assert pooled < 1e-10  # 384 "independent" pairs
    found = compare(a, b, mask)
    assert found.lower < 0 < found.upper and found.verdict == "no clear difference"


def test_below_the_minimum_evidence_a_clear_difference_is_not_claimed():
    a = np.full((MIN_ORIGINS - 1, 4), 0.01)
    b = np.full((MIN_ORIGINS - 1, 4), 0.02) + np.arange(4) * 1e-4
    found = compare(a, b, np.ones_like(a, dtype=bool))
    assert found.upper < 0 and not found.enough and found.verdict == "no clear difference"
    few_pairs = np.zeros((12, 4), dtype=bool)
    few_pairs[:MIN_PAIRS - 1, 0] = True  # enough origins, too few pairs
    found = compare(np.full((12, 4), 0.01), np.full((12, 4), 0.02), few_pairs)
    assert found.origins == MIN_PAIRS - 1 >= MIN_ORIGINS and not found.enough


def test_a_cell_with_too_few_origins_names_no_best():
    errors = {"a": np.full((4, 3), 0.01), "b": np.full((4, 3), 0.02)}
    ranking = rank(errors, np.ones((4, 3), dtype=bool))
    assert not ranking.ranked and ranking.best is None and ranking.verdicts == {}
    assert ranking.reason.startswith("too few origins to rank") and ranking.origins == 4


def test_the_best_is_the_lowest_centre_among_those_allowed_and_the_rest_are_judged():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.01, 0.03, (10, 2))
    errors = {"naive": base * 1.3, "auto": base, "lstm": base * 0.7}
    mask = np.ones((10, 2), dtype=bool)
    ranking = rank(errors, mask, eligible={"naive", "auto"})  # lstm fell back: not best
    assert ranking.ranked and ranking.best == "auto"
    assert ranking.verdicts == {"naive": "worse", "lstm": "better"}
    assert (ranking.origins, ranking.pairs) == (10, 20)
    assert ranking.centres["auto"] == pytest.approx(base.mean())
    nobody = rank(errors, mask, eligible=set())
    assert not nobody.ranked and nobody.best is None


def test_an_interval_can_be_cut_at_the_least_value_and_still_hold_its_centre():
    values = np.array([[0.001], [0.002], [0.05], [0.001], [0.0]])
    mask = np.ones_like(values, dtype=bool)
    raw = estimate(values, mask)
    assert raw.lower < 0  # a t interval of a skewed, small sample reaches below zero
    cut = estimate(values, mask, least=0.0)
    assert cut.lower == 0.0 and (cut.centre, cut.upper) == (raw.centre, raw.upper)
    assert cut.lower <= cut.centre <= cut.upper
