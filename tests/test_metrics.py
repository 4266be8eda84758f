"""Each metric on a tiny hand-made example (the worked example of docs/metrics.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from moetrace.metrics import (
    constant_bound,
    error_rate,
    is_constant,
    imbalance_error,
    imbalance_ratio,
    mean_error_ratio,
    nanmean_rows,
    score,
    step_error,
    window_error,
)

# docs/metrics.md, "Worked example": 3 experts, 2 steps, a constant forecast.
F = np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]])
A = np.array([[0.4, 0.4, 0.2], [0.6, 0.4, 0.0]])


def test_error_rate_is_mean_of_per_step_absolute_errors():
    assert step_error(F, A) == pytest.approx([0.2, 0.4])
    assert error_rate(F, A) == pytest.approx(0.3)


def test_error_rate_is_twice_total_variation_distance():
    rng = np.random.default_rng(0)
    f, a = rng.dirichlet(np.ones(8), size=5), rng.dirichlet(np.ones(8), size=5)
    tv = 0.5 * np.abs(f - a).sum(axis=1)
    assert error_rate(f, a) == pytest.approx(2 * tv.mean())


def test_mean_error_ratio_skips_and_counts_zero_actuals():
    ratio, zeros = mean_error_ratio(F, A)
    assert ratio == pytest.approx((0.25 + 0.25 + 0 + 0.1 / 0.6 + 0.25) / 5)
    assert zeros == 1


def test_mean_error_ratio_all_zero_is_nan():
    ratio, zeros = mean_error_ratio(np.array([[0.5, 0.5]]), np.array([[0.0, 0.0]]))
    assert np.isnan(ratio) and zeros == 2


def test_window_error_compares_window_means():
    assert window_error(F, A) == pytest.approx(0.2)
    # A forecast right on average but wrong at every step has no window error.
    a = np.array([[0.6, 0.4], [0.4, 0.6]])
    f = np.array([[0.4, 0.6], [0.6, 0.4]])
    assert window_error(f, a) == pytest.approx(0.0)
    assert error_rate(f, a) == pytest.approx(0.4)


def test_imbalance_error_is_relative_error_of_max_over_mean():
    assert imbalance_ratio(A) == pytest.approx([1.2, 1.8])
    assert imbalance_error(F, A) == pytest.approx((0.3 / 1.2 + 0.3 / 1.8) / 2)


def test_leading_axes_are_kept():
    f = np.stack([F, A])  # (2 layers, H, E)
    a = np.stack([A, A])
    out = score(f, a)
    assert out["error_rate"] == pytest.approx([0.3, 0.0])
    assert out["window_error"] == pytest.approx([0.2, 0.0])
    assert out["zero_actuals"].tolist() == [1, 1]
    assert out["imbalance_error"][1] == 0.0


def test_score_agrees_with_each_metric():
    rng = np.random.default_rng(3)
    f, a = rng.dirichlet(np.ones(6), size=(2, 7)), rng.dirichlet(np.ones(6), size=(2, 7))
    a[0, 0, 0] = 0.0
    out = score(f, a)
    assert out["error_rate"] == pytest.approx(error_rate(f, a))
    assert out["mean_error_ratio"] == pytest.approx(mean_error_ratio(f, a)[0])
    assert out["zero_actuals"].tolist() == [1, 0]
    assert out["window_error"] == pytest.approx(window_error(f, a))
    assert out["imbalance_error"] == pytest.approx(imbalance_error(f, a))


def test_nanmean_rows_ignores_nan_and_is_quiet_about_empty_rows():
    import warnings

    values = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, np.nan], [0.5, 0.5, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        means = nanmean_rows(values)
    np.testing.assert_array_equal(means[[0, 2]], [2.0, 1.0])
    assert np.isnan(means[1])


def test_constant_bound_of_the_worked_example():
    # medians per expert over the 2 steps: 0.5, 0.4, 0.1; |a - m| sums to 0.2 + 0 + 0.2
    assert constant_bound(A) == pytest.approx(0.2)
    assert error_rate(F, A) >= constant_bound(A)
    # the bound is met: the per-expert medians, held constant (not a distribution here)
    assert error_rate(np.repeat(np.median(A, axis=0)[None], 2, axis=0), A) == pytest.approx(0.2)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 9), st.integers(2, 6), st.integers(0, 2**32 - 1),
       st.sampled_from(["simplex", "anything", "a step of the actuals", "the mean"]))
def test_no_constant_forecast_scores_below_the_constant_bound(steps, experts, seed, kind):
    rng = np.random.default_rng(seed)
    actual = rng.dirichlet(np.full(experts, 0.5), size=(3, steps))  # 3 layers
    held = {"simplex": rng.dirichlet(np.ones(experts), size=3),
            "anything": rng.normal(0.2, 0.5, size=(3, experts)),
            "a step of the actuals": actual[:, rng.integers(steps)],
            "the mean": actual.mean(axis=1)}[kind]
    forecast = np.repeat(held[:, None], steps, axis=1)
    assert is_constant(forecast).all()
    assert (error_rate(forecast, actual) >= constant_bound(actual) - 1e-12).all()


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 9), st.integers(1, 6)),
              elements=st.floats(0, 1)))
def test_the_bound_is_the_lowest_error_of_a_constant(actual):
    """The per-expert median attains it (odd and even numbers of steps): no constant does
    better, and that one does as well."""
    best = np.repeat(np.median(actual, axis=0)[None], len(actual), axis=0)
    assert error_rate(best, actual) == pytest.approx(constant_bound(actual))


def test_is_constant_tells_a_held_forecast_from_a_moving_one():
    f = np.repeat(np.array([[0.5, 0.5]]), 4, axis=0)[None]  # (1, 4, 2)
    moving = f.copy()
    moving[0, 3] = [0.6, 0.4]
    assert is_constant(np.concatenate([f, moving])).tolist() == [True, False]
