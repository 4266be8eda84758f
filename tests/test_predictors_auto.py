"""auto and drift on traces where the right answer is known; calibrated intervals and the
expected error on a stationary process whose quantiles are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from moetrace.predictors import PredictorOptions, make_predictor
from moetrace.predictors.inner import conformal_interval, inner_origins, valid_origins
from moetrace.trace.shares import Loads

N = 200_000  # tokens per step


def sampled(shares: np.ndarray, seed: int = 0) -> Loads:
    """Counts drawn step by step (multinomial, N tokens) from (L, T, E) shares."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(N, shares.reshape(-1, shares.shape[-1])).reshape(shares.shape)
    return Loads(np.arange(shares.shape[1]), counts, tuple(range(shares.shape[0])))


def test_after_a_transient_between_two_levels_auto_uses_only_the_new_level():
    rng = np.random.default_rng(1)
    a, b = np.array([0.4, 0.3, 0.2, 0.1]), np.array([0.1, 0.2, 0.3, 0.4])
    t = 5000
    shares = np.empty((1, t, 4))
    shares[0, :3000] = a
    swing = rng.dirichlet(np.ones(4) * 3, size=(20,)).repeat(25, axis=0)  # 500 steps of swings
    shares[0, 3000:3500] = swing
    shares[0, 3500:] = b
    loads = sampled(shares)
    origin = 4300
    auto = make_predictor("auto", PredictorOptions(horizons=(500,))).fit(loads.upto(origin))
    assert auto.onsets[0] is not None and 3500 <= auto.onsets[0] <= 3700  # stable again
    f_auto = auto.forecast(500).mean(axis=1)[0]
    f_sw = make_predictor("sw_avg").fit(loads.upto(origin)).forecast(500).mean(axis=1)[0]
    err_auto, err_sw = np.abs(f_auto - b).sum(), np.abs(f_sw - b).sum()
    assert err_auto < 0.01, f_auto  # the new level, not a blend with the swings before it
    assert err_sw > 5 * err_auto  # the 1,000-step window straddles the change


def test_drift_follows_a_trend_damped_and_keeps_a_constant():
    t = np.arange(4000)
    trend = np.stack([0.3 + 2e-5 * t, 0.3 - 2e-5 * t, np.full(4000, 0.4)], axis=-1)[None]
    loads = sampled(trend, seed=2)
    drift = make_predictor("drift", PredictorOptions(horizons=(1000,))).fit(loads.upto(2999))
    f = drift.forecast(1000).mean(axis=1)[0]
    truth = trend[0, 3000:4000].mean(axis=0)
    last = loads.shares[0, 2900:3000].mean(axis=0)
    assert np.abs(f - truth).sum() < 0.5 * np.abs(last - truth).sum()  # beats the window mean
    assert "shrink=0," not in drift.chosen[0]  # it chose a trend
    flat = sampled(np.broadcast_to([0.5, 0.3, 0.2], (1, 3000, 3)).copy(), seed=3)
    g = make_predictor("drift", PredictorOptions(horizons=(1000,))).fit(flat).forecast(1000)
    assert np.abs(g.mean(axis=1)[0] - [0.5, 0.3, 0.2]).sum() < 0.002


@pytest.mark.parametrize("horizon", [500, 1000])
def test_intervals_cover_the_mean_share_of_a_stationary_process_as_promised(horizon):
    """Shares fixed at p, counts multinomial: the actual mean share over H steps and any
    window mean are normal around p, so 80% intervals must hold it 80% of the time."""
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(64) * 5)
    t = 9000
    loads = sampled(np.broadcast_to(p, (1, t, 64)).copy(), seed=5)
    inside, expected, realised = [], [], []
    for origin in range(4000, t - horizon, 250):
        model = make_predictor("auto", PredictorOptions(horizons=(horizon,)))
        model.fit(loads.upto(origin))
        u = model.uncertainty(horizon)
        future = loads.shares[0, origin + 1:origin + 1 + horizon]
        inside.append((u.lower[0] <= future.mean(0)) & (future.mean(0) <= u.upper[0]))
        expected.append(u.expected_error[0])
        realised.append(np.abs(model.forecast(horizon)[0] - future).sum(-1).mean())
    coverage = np.mean(inside)
    assert 0.74 <= coverage <= 0.86, coverage
    assert np.mean(expected) == pytest.approx(np.mean(realised), rel=0.1)


def test_conformal_bounds_match_known_normal_quantiles():
    rng = np.random.default_rng(6)
    f = np.full((1, 200), 0.25)
    scale = np.sqrt(0.25 * 0.75)
    past_f = np.full((40, 1, 200), 0.25)
    past_a = past_f + rng.normal(0, 0.01, past_f.shape) * scale  # residuals ~ N(0, 0.01 s)
    lower, upper = conformal_interval(f, past_f, past_a, 0.8)
    z = norm.ppf(0.9)
    assert (upper - f)[0, 0] / scale == pytest.approx(0.01 * z, rel=0.08)
    assert (f - lower)[0, 0] / scale == pytest.approx(0.01 * z, rel=0.08)
    nothing = np.full_like(past_a, np.nan)  # no past error to learn from: unknown, not zero
    assert np.isnan(conformal_interval(f, past_f, nothing, 0.8)[0]).all()


def test_inner_origins_see_only_the_history_and_skip_a_stable_layers_transient_past():
    origins = inner_origins(100, 20)
    assert origins.max() + 20 <= 100 and len(origins) == 8
    valid = valid_origins(origins, np.array([-1, 90, 70]))
    assert valid[:, 0].all() and not valid[:, 1].any()
    assert (valid[:, 2] == (origins > 70)).all()
