"""arima: the vectorised ARIMA arithmetic against statsmodels and by hand, estimation and its
fallback for explosive AR estimates, the drift test, order selection, a linear trend followed
with d = 1 but a transient in the window not extrapolated, and parameter reuse across origins."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from predictor_data import loads_from_shares, random_walk

from moetrace.errors import ParameterError
from moetrace.predictors import PredictorOptions, make_predictor
from moetrace.predictors import arima_fit
from moetrace.predictors.arima_drift import drift_t, supported_drift
from moetrace.predictors.arima_order import select_orders
from moetrace.predictors.arma import (
    arma_forecast,
    css_residuals,
    difference,
    fix_roots,
    integrate,
    min_root,
)
from moetrace.trace.read import read_trace

SAMPLE_350M = Path(__file__).resolve().parent.parent / "sample_traces" / "gpt3-350m-sim.parquet"


def _arma_sample(n: int, phi: list[float], theta: list[float], seed: int = 0) -> np.ndarray:
    from statsmodels.tsa.arima_process import arma_generate_sample

    rng = np.random.default_rng(seed)
    return arma_generate_sample(np.r_[1, -np.array(phi)], np.r_[1, theta], nsample=n,
                                distrvs=rng.standard_normal)


@pytest.mark.parametrize("d", [0, 1])
def test_filter_and_forecast_match_statsmodels_with_the_same_parameters(d):
    from statsmodels.tsa.arima.model import ARIMA

    y = _arma_sample(600, [0.5, -0.2], [0.4]) + 3.0
    y = np.cumsum(y) if d else y
    phi, theta = np.array([[0.5, -0.2]]), np.array([[0.4]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if d:
            expected = ARIMA(y, order=(2, 1, 1), trend="n").filter([0.5, -0.2, 0.4, 1.0])
        else:
            expected = ARIMA(y, order=(2, 0, 1), trend="c").filter([3.0, 0.5, -0.2, 0.4, 1.0])
    w, lasts = difference(y[None], d)
    mu = 0.0 if d else 3.0
    e = css_residuals(w - mu, phi, theta)
    ours = integrate(arma_forecast(w - mu, e, phi, theta, 12) + mu, lasts)[0]
    np.testing.assert_allclose(ours, expected.forecast(12), rtol=0, atol=1e-8)


def test_difference_and_integrate_by_hand():
    x = np.array([[1.0, 4.0, 9.0, 16.0]])
    w, lasts = difference(x, 2)
    assert w.tolist() == [[2.0, 2.0]] and lasts.tolist() == [[16.0, 7.0]]
    # second differences stay 2: 25, 36
    assert integrate(np.array([[2.0, 2.0]]), lasts).tolist() == [[25.0, 36.0]]


def test_fix_roots_reflects_non_invertible_ma_and_explosive_ar():
    np.testing.assert_allclose(fix_roots(np.array([2.0]), 1.0), [0.5])  # 1+2z -> 1+0.5z
    np.testing.assert_allclose(fix_roots(np.array([2.0]), -1.0), [0.5])  # 1-2z -> 1-0.5z
    np.testing.assert_array_equal(fix_roots(np.array([0.5, -0.2]), -1.0), [0.5, -0.2])


def test_min_root_by_hand():
    assert min_root(np.array([0.5]), -1.0) == pytest.approx(2.0)  # 1 - 0.5z: root 2
    assert min_root(np.array([-0.25]), 1.0) == pytest.approx(4.0)  # 1 - 0.25z
    assert min_root(np.zeros(3), 1.0) == np.inf


def test_explosive_or_unit_root_ar_estimate_falls_back_to_pure_ma():
    # AR(1) fitted to the levels of a random walk lands at phi ~ 1 (a unit root): not kept
    walk = np.cumsum(np.random.default_rng(3).normal(size=2000))
    phi, theta = arima_fit.estimate_one(walk - walk.mean(), 1, 1)
    assert phi.tolist() == [0.0] and theta.shape == (1,)
    assert min_root(theta, 1.0) >= 1.0
    # a clearly stationary AR(1) keeps its estimate
    phi, _ = arima_fit.estimate_one(_arma_sample(2000, [0.5], [], seed=1), 1, 0)
    assert phi[0] == pytest.approx(0.5, abs=0.06)


def test_hannan_rissanen_recovers_known_parameters():
    w = _arma_sample(4000, [0.7], [0.3], seed=2)
    phi, theta = arima_fit.estimate_one(w - w.mean(), 1, 1)
    assert phi[0] == pytest.approx(0.7, abs=0.05)
    assert theta[0] == pytest.approx(0.3, abs=0.07)


def test_flat_series_gets_zero_parameters():
    phi, theta = arima_fit.estimate_one(np.zeros(100), 5, 5)
    assert not phi.any() and not theta.any() and phi.shape == (5,) and theta.shape == (5,)


def test_worker_pool_gives_the_same_estimates_as_in_process(monkeypatch):
    rng = np.random.default_rng(4)
    series = [rng.normal(size=120) for _ in range(8)]
    orders = [(2, 1)] * 8
    alone = arima_fit.estimate_many(series, orders)
    monkeypatch.setattr(arima_fit, "POOL_THRESHOLD", 1)
    monkeypatch.setattr(arima_fit, "CHUNK", 3)
    done = []
    pooled = arima_fit.estimate_many(series, orders, lambda d, t: done.append((d, t)))
    for (a_phi, a_theta), (p_phi, p_theta) in zip(alone, pooled):
        np.testing.assert_array_equal(a_phi, p_phi)
        np.testing.assert_array_equal(a_theta, p_theta)
    assert done[-1] == (8, 8)


def test_linear_trend_is_followed_with_d_equal_1():
    t = np.arange(1000)
    first = 0.2 + 1e-4 * t
    shares = np.stack([first, 1 - first], axis=-1)[None]
    p = make_predictor("arima", PredictorOptions(order=(1, 1, 0), bucket=10))
    out = p.fit(loads_from_shares(shares)).forecast(500)
    # bucket k (steps 1000+10k .. 1009+10k) forecasts the trend's mean over that bucket
    expected = 0.2 + 1e-4 * (1000 + 10 * (np.arange(500) // 10) + 4.5)
    np.testing.assert_allclose(out[0, :, 0], expected, atol=1e-5)


def test_newey_west_t_statistic_by_hand():
    # n = 4: bandwidth floor(4 * 0.04^(2/9)) = 1; x = w - 2 = [-1, 1, -1, 1]
    # gamma0 = 1, gamma1 = -3/4, long-run variance 1 + 2 * (1/2) * (-3/4) = 1/4
    # standard error sqrt(1/4 / 4) = 1/4, t = 2 / (1/4) = 8
    assert drift_t(np.array([[1.0, 3.0, 1.0, 3.0]]))[0] == pytest.approx(8.0)
    assert drift_t(np.full((1, 10), 0.5))[0] == np.inf  # an exact trend
    assert drift_t(np.zeros((1, 10)))[0] == 0.0


def test_drift_is_kept_only_where_the_t_test_supports_it():
    rng = np.random.default_rng(6)
    steps = rng.normal(size=(200, 400))  # random walks without drift: their increments
    kept = supported_drift(steps) != 0
    assert kept.mean() < 0.01  # a 0.1% level; at 5% about 10 of 200 would keep a drift
    trending = rng.normal(size=(1, 400)) + 0.5
    assert supported_drift(trending)[0] == pytest.approx(trending.mean())


def test_order_selection_differences_once_and_picks_ar_terms_for_an_integrated_ar2():
    n_experts = 4
    x = np.stack([0.001 * np.cumsum(_arma_sample(400, [0.6, 0.2], [], seed=s))
                  for s in range(n_experts)], axis=-1)
    shares = (0.25 + x)[None]  # (1, 400, 4): each expert an ARIMA(2, 1, 0) around 1/E
    ((p, d, q),) = select_orders(shares)
    assert d == 1 and p >= 1


def test_a_transient_in_the_window_is_not_extrapolated():
    # expert 0 falls from 0.5 to 0.3 over the first 1,000 steps, then stays there with noise;
    # the window's mean difference is a drift of -0.2 / 400 buckets, which extrapolated over
    # 200 buckets would forecast 0.2: the forecast must stay at the current level
    rng = np.random.default_rng(7)
    t = np.arange(4000)
    first = 0.3 + 0.2 * np.exp(-t / 200) + rng.normal(0, 0.002, t.size)
    shares = np.stack([first, 1 - first], axis=-1)[None]
    p = make_predictor("arima", PredictorOptions(order=(1, 1, 1), bucket=10))
    out = p.fit(loads_from_shares(shares)).forecast(2000)
    np.testing.assert_allclose(out[0, :, 0], 0.3, atol=0.003)
    assert p._states[0].mu[0] == 0.0


@pytest.mark.parametrize("order", [None, (5, 1, 5)])
def test_stable_state_forecast_of_the_350m_sample_is_close_to_naive(order):
    """The regression behind the drift test: a drift from the transient in the fitting window
    made ARIMA's 2,000-step error 5-10x naive's on this sample; it must now be comparable."""
    loads = read_trace(SAMPLE_350M).loads()  # both layers stable from step 1,800
    history = loads.upto(2999)
    truth = loads.shares[:, 3000:5000]
    errors = {}
    for name in ("naive", "arima"):
        f = make_predictor(name, PredictorOptions(order=order)).fit(history).forecast(2000)
        errors[name] = np.abs(f - truth).sum(-1).mean()
        assert f.min() >= 0
    assert errors["arima"] < 1.5 * errors["naive"]


def test_automatic_order_forecast_is_valid():
    loads = random_walk(n_layers=1, n_steps=800, n_experts=4)
    p = make_predictor("arima", PredictorOptions(bucket=10))
    out = p.fit(loads).forecast(100)
    assert len(p.models) == 1 and all(0 <= v <= 5 for v in p.models[0].order)
    np.testing.assert_allclose(out.sum(-1), 1.0)


def test_parameters_are_reused_at_later_origins_and_reestimated_when_needed():
    loads = random_walk(n_steps=1200, seed=8)
    p = make_predictor("arima", PredictorOptions(order=(1, 1, 1), bucket=10))
    p.refit_every = 400
    first = p.fit(loads.upto(599)).models
    assert p.fit(loads.upto(899)).models is first  # grew by 300 < 400 steps: reused
    assert p.fit(loads.upto(999)).models is not first  # grew by 400: re-estimated
    again = p.models
    assert p.fit(loads.upto(799)).models is not again  # an earlier origin never reuses


def test_parameters_from_a_short_history_are_reestimated_once_it_doubled():
    loads = random_walk(n_steps=800, seed=9)
    p = make_predictor("arima", PredictorOptions(order=(1, 1, 1), bucket=10))
    first = p.fit(loads.upto(299)).models  # 300 steps
    assert p.fit(loads.upto(579)).models is first  # 580 steps: not yet doubled
    assert p.fit(loads.upto(599)).models is not first  # 600 steps: doubled


def test_order_too_long_for_the_history_is_a_parameter_error():
    with pytest.raises(ParameterError, match="ARIMA\\(5,1,5\\).*buckets"):
        make_predictor("arima", PredictorOptions(order=(5, 1, 5), bucket=10)).fit(
            random_walk(n_steps=300))
