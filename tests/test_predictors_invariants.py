"""Every registered predictor: shape, non-negative shares summing to 1, constant shares kept,
and no leakage (data after the origin never changes a forecast)."""

from __future__ import annotations

import numpy as np
import pytest
from predictor_data import constant, random_walk

from moetrace.errors import ParameterError
from moetrace.predictors import REGISTRY, PredictorOptions, make_predictor
from moetrace.trace.shares import Loads

#: Small settings (a fixed ARIMA order: order selection has its own tests) so every predictor
#: fits a 600-step toy trace in about a second.
OPTIONS = PredictorOptions(bucket=10, window=100, order=(2, 1, 1), seed=3)


@pytest.fixture(params=list(REGISTRY))
def name(request) -> str:
    return request.param


def test_forecast_shape_and_simplex(name):
    loads = random_walk()
    out = make_predictor(name, OPTIONS).fit(loads).forecast(123)
    assert out.shape == (loads.n_layers, 123, loads.n_experts)
    assert out.dtype == np.float64
    assert (out >= 0).all()
    np.testing.assert_allclose(out.sum(axis=2), 1.0, atol=1e-12)


def test_constant_shares_are_forecast_unchanged(name):
    loads = constant()
    out = make_predictor(name, OPTIONS).fit(loads).forecast(200)
    expected = np.broadcast_to(loads.shares[:, -1:], out.shape)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_no_leakage_data_after_the_origin_changes_nothing(name):
    loads = random_walk(n_steps=800, seed=5)
    origin = int(loads.steps[599])
    altered = loads.counts.copy()
    altered[:, 600:] = np.random.default_rng(9).integers(1, 10_000, altered[:, 600:].shape)
    other = Loads(loads.steps, altered, loads.layers)
    a = make_predictor(name, OPTIONS).fit(loads.upto(origin)).forecast(300)
    b = make_predictor(name, OPTIONS).fit(other.upto(origin)).forecast(300)
    np.testing.assert_array_equal(a, b)


def test_refitting_at_a_later_origin_uses_only_the_new_history(name):
    """The engine refits one object at increasing origins; the result must be what a fresh
    predictor fitted with the same sequence of histories gives, whatever comes later."""
    loads = random_walk(n_steps=900, seed=6)
    altered = loads.counts.copy()
    altered[:, 700:] = altered[:, 700:][:, ::-1]
    other = Loads(loads.steps, altered, loads.layers)
    outs = []
    for trace in (loads, other):
        p = make_predictor(name, OPTIONS)
        p.fit(trace.upto(499)).forecast(100)
        outs.append(p.fit(trace.upto(699)).forecast(100))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_forecast_before_fit_and_bad_horizon_are_parameter_errors(name):
    p = make_predictor(name, OPTIONS)
    with pytest.raises(ParameterError, match="fit"):
        p.forecast(10)
    p.fit(constant())
    with pytest.raises(ParameterError, match="horizon"):
        p.forecast(0)


def test_too_short_history_is_a_parameter_error_naming_the_need(name):
    with pytest.raises(ParameterError, match="history"):
        make_predictor(name, OPTIONS).fit(constant(n_steps=5))


def test_unknown_predictor_names_the_known_ones():
    with pytest.raises(ParameterError, match="naive"):
        make_predictor("prophet")
