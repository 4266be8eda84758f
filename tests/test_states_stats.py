"""Windowed variance/range and imbalance measures against direct computation and hand values."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from moetrace.states.stats import moving_mean, step_imbalance, windowed_range, windowed_variance


@pytest.fixture
def shares() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = rng.random((61, 6))
    return x / x.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("w", [2, 3, 10, 11, 61])
def test_windowed_statistics_match_direct_computation(shares, w):
    view = sliding_window_view(shares, w, axis=0)  # (T-w+1, E, w)
    assert windowed_variance(shares, w).shape == (61 - w + 1, 6)
    np.testing.assert_allclose(windowed_variance(shares, w), view.var(axis=-1, ddof=1),
                               rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(windowed_range(shares, w), view.max(-1) - view.min(-1))
    np.testing.assert_allclose(moving_mean(shares, w), view.mean(-1))


def test_windowed_variance_keeps_precision_over_long_series():
    # a tiny variance on top of a large level, over many steps: the one-pass formula must not
    # lose it to cancellation
    rng = np.random.default_rng(0)
    x = 0.3 + 1e-5 * rng.standard_normal((50_000, 2))
    got = windowed_variance(x, 100)[-1]
    np.testing.assert_allclose(got, x[-100:].var(axis=0, ddof=1), rtol=1e-6)


def test_windowed_range_by_hand():
    x = np.array([[0.1], [0.4], [0.2], [0.3]])
    np.testing.assert_allclose(windowed_range(x, 2)[:, 0], [0.3, 0.2, 0.1])
    np.testing.assert_allclose(windowed_range(x, 3)[:, 0], [0.3, 0.2])


def test_step_imbalance_by_hand():
    got = step_imbalance(np.array([[0.5, 0.25, 0.25, 0.0], [0.25, 0.25, 0.25, 0.25]]))
    np.testing.assert_allclose(got["max_mean"], [2.0, 1.0])
    # std of (0.5, 0.25, 0.25, 0) is sqrt(0.03125); over the mean 0.25
    np.testing.assert_allclose(got["cv"], [np.sqrt(0.03125) / 0.25, 0.0])
    # entropy: -(0.5 ln 0.5 + 2 * 0.25 ln 0.25) / ln 4 = 1.5 ln 2 / (2 ln 2) = 0.75
    np.testing.assert_allclose(got["entropy"], [0.75, 1.0])
    # busiest 10% of 4 experts is one expert
    np.testing.assert_allclose(got["top10_share"], [0.5, 0.25])


def test_top10_share_counts_ceil_of_ten_percent():
    shares = np.full((1, 16), 1 / 16)
    shares[0, :2] = [0.2, 0.1]
    shares[0, 2:] = 0.7 / 14
    # ceil(1.6) = 2 busiest experts
    np.testing.assert_allclose(step_imbalance(shares)["top10_share"], [0.3])
