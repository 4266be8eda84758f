"""Coverage of stated intervals counts every forecast; its summaries and the one-line verdict
against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from moetrace.backtest import BacktestResult, backtest
from moetrace.calibrate import calibration_verdict, coverage_of, state_coverage
from moetrace.predictors.base import Uncertainty
from moetrace.trace.shares import Loads

SHARES = np.array([0.4, 0.3, 0.2, 0.1])


def constant_loads(n_steps: int = 120, n_layers: int = 2) -> Loads:
    counts = np.broadcast_to((SHARES * 100).astype(np.int64), (n_layers, n_steps, 4)).copy()
    return Loads(np.arange(n_steps), counts, tuple(range(n_layers)))


class Stated:
    """Forecasts the true shares and states an interval [0.35, 0.45] for every expert (so
    only expert 0, share 0.4, is inside): none at all at its first fit, none for layer 1
    (NaN bounds) at its third, and an interval around every share for layer 0 at its last."""

    name, fallback = "stated", None

    def __init__(self):
        self.fits = 0

    def fit(self, history):
        self.fits += 1
        self.layers = np.array(history.layers)
        self.n_layers = len(self.layers)
        return self

    def forecast(self, horizon):
        return np.broadcast_to(SHARES, (self.n_layers, horizon, 4)).copy()

    def uncertainty(self, horizon):
        if self.fits == 1:
            return None  # too little history: no interval at all
        lower = np.full((self.n_layers, 4), 0.35)
        upper = np.full((self.n_layers, 4), 0.45)
        if self.fits == 3:
            lower[self.layers == 1] = upper[self.layers == 1] = np.nan  # none for layer 1
        if self.fits == 6:
            lower[self.layers == 0] = SHARES - 0.01  # every expert inside
            upper[self.layers == 0] = SHARES + 0.01
        return Uncertainty(horizon, lower, upper, np.full(self.n_layers, 0.01 * self.fits),
                           0.8)


def run(loads: Loads, predictor) -> BacktestResult:
    origins = [19, 29, 39, 49, 59, 69]
    stable = np.ones((loads.n_layers, loads.n_steps), dtype=bool)
    return backtest(loads, [predictor], [10], origins=origins, stable=stable, min_history=1,
                    lookahead_radius=None)


def test_coverage_counts_every_forecast_one_without_an_interval_as_not_covered():
    result = run(constant_loads(), Stated())
    m = result.scores[("stated", 10)].metrics
    expected = np.array([[0, 0], [0.25, 0.25], [0.25, 0], [0.25, 0.25], [0.25, 0.25],
                         [1, 0.25]])
    assert np.array_equal(m["coverage"], expected)
    assert np.array_equal(m["stated"], [[0, 0], [1, 1], [1, 0], [1, 1], [1, 1], [1, 1]])
    inside = result.scores[("stated", 10)].inside
    assert inside.shape == (6, 2, 4)
    assert np.array_equal(inside.mean(axis=2), expected)
    assert (inside[1:, 1, 0] == [1, 0, 1, 1, 1]).all()

    c = coverage_of(result.scores[("stated", 10)], np.ones((6, 2), dtype=bool))
    assert c.forecasts == 12 and c.stated == 9 and c.origins == 6
    assert c.pooled == pytest.approx(expected.mean())
    # the report's centre: the mean over origins of the per-origin layer mean (origin 2 had
    # an interval for layer 0 only, origin 0 none)
    assert c.stated_pooled == pytest.approx((0.25 * 4 + (1 + 0.25) / 2) / 5)
    assert c.layers == (pytest.approx(expected[:, 1].mean()),
                        pytest.approx(expected[:, 0].mean()))
    per_expert = np.concatenate([inside[:, 0].mean(axis=0), inside[:, 1].mean(axis=0)])
    assert c.experts == (pytest.approx(np.quantile(per_expert, 0.1)),
                         pytest.approx(np.quantile(per_expert, 0.9)))
    # expected error 0.01 x fit number where stated, realised 0 (a perfect forecast)
    assert c.expected_error == pytest.approx(np.mean([0.02, 0.03, 0.04, 0.05, 0.06]))
    assert c.realised_error == 0.0 and c.error_ratio is None


def test_the_pooled_coverage_is_the_report_rows_coverage_of_the_same_cell():
    """One figure per quantity: with a layer in its transient at the first three origins the
    stable cell has one pair there and two later; the coverage summarised is the report's
    centre (mean over origins of the layer mean, 0.271 here), not the mean over pairs
    (0.306)."""
    from moetrace.report.results import summarize

    loads = constant_loads()
    stable = np.ones((2, 120), dtype=bool)
    stable[1, :45] = False  # layer 1 transient at origins 19, 29, 39
    result = backtest(loads, [Stated()], [10], origins=[19, 29, 39, 49, 59, 69],
                      stable=stable, min_history=1, lookahead_radius=None)
    c = state_coverage(result, "stated", 10)
    assert c.forecasts == 9
    assert c.pooled == pytest.approx((0 + 0.25 + 0.25 + 0.25 + 0.25 + 0.625) / 6)
    row = next(r for r in summarize(result) if r.state == "stable" and r.layer is None)
    assert row.coverage == pytest.approx(c.pooled)
    assert f"{100 * c.pooled:.0f}% at 10 steps" in calibration_verdict(result, "stated")


def test_a_predictor_that_states_no_uncertainty_has_no_coverage():
    class Plain(Stated):
        name = "plain"

        def uncertainty(self, horizon):
            return None

    result = run(constant_loads(), Plain())
    scores = result.scores[("plain", 10)]
    assert np.isnan(scores.metrics["coverage"]).all() and scores.inside is None
    assert coverage_of(scores, np.ones((6, 2), dtype=bool)) is None
    assert calibration_verdict(result, "plain") is None


def test_coverage_of_chunks_of_layers_merges_to_the_whole():
    loads = constant_loads(n_layers=3)
    whole = run(loads, Stated())
    parts = [run(loads.select([0, 1]), Stated()), run(loads.select([2]), Stated())]
    merged = BacktestResult.merge(parts)
    for key in ("coverage", "stated"):
        assert np.array_equal(merged.scores[("stated", 10)].metrics[key],
                              whole.scores[("stated", 10)].metrics[key])
    assert np.array_equal(merged.scores[("stated", 10)].inside,
                          whole.scores[("stated", 10)].inside)


def test_the_calibration_verdict_says_too_narrow_with_the_coverage_of_every_forecast():
    result = run(constant_loads(), Stated())
    line = calibration_verdict(result, "stated")
    pooled = state_coverage(result, "stated", 10).pooled
    assert f"{100 * pooled:.0f}% at 10 steps" in line
    assert "too narrow at 10 steps" in line and "calibrated" not in line
    assert state_coverage(result, "stated", 10, "transient") is None  # no transient pair
    few = backtest(constant_loads(), [Stated()], [10], origins=[19, 29, 39],
                   stable=np.ones((2, 120), dtype=bool), min_history=1, lookahead_radius=None)
    assert "too few origins to judge" in calibration_verdict(few, "stated")
