"""The rolling-origin engine against oracle predictors whose errors are known exactly."""

import numpy as np
import pytest

from moetrace.backtest import backtest, choose_origins
from moetrace.errors import InternalError, ParameterError
from moetrace.predictors import REGISTRY
from moetrace.trace.shares import Loads

BASE = np.array([40, 30, 20, 10])  # shares 0.4, 0.3, 0.2, 0.1 at every step


def constant_loads(n_steps=60, n_layers=2, steps=None):
    steps = np.arange(n_steps) if steps is None else np.asarray(steps)
    counts = np.broadcast_to(BASE, (n_layers, len(steps), 4)).copy()
    return Loads(steps.astype(np.int64), counts, tuple(range(n_layers)))


class Oracle:
    """Forecasts the true future shares (plus ``offset``); records the origins it was fitted at."""

    def __init__(self, truth: Loads, offset=0.0, name="oracle"):
        self.truth, self.offset, self.name = truth, np.asarray(offset), name
        self.seen = []

    def fit(self, history):
        self.origin = int(history.steps[-1])
        self.seen.append(self.origin)
        return self

    def forecast(self, horizon):
        steps = self.truth.steps
        out = np.full((self.truth.n_layers, horizon, self.truth.n_experts),
                      1 / self.truth.n_experts)
        ahead = steps[(steps > self.origin) & (steps <= self.origin + horizon)]
        out[:, ahead - self.origin - 1] = self.truth.shares[:, np.searchsorted(steps, ahead)]
        return out + self.offset

    fallback = None  # the protocol: never falls back

    def uncertainty(self, horizon):
        return None  # the protocol: no calibration of its own


def test_exact_oracle_scores_zero_everywhere():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 50, size=(3, 80, 5))
    counts[:, :, 0] += 1
    loads = Loads(np.arange(80), counts, (0, 1, 2))
    oracle = Oracle(loads)
    result = backtest(loads, [oracle], [10, 20], min_history=10, stride=7)
    for h in (10, 20):
        s = result.scores[("oracle", h)]
        for name in ("error_rate", "mean_error_ratio", "window_error", "imbalance_error"):
            values = s.metrics[name][s.fits]
            assert values.size and np.allclose(values, 0.0), name
        assert np.isnan(s.metrics["error_rate"][~s.fits]).all()
    assert oracle.seen == result.origins.tolist()
    assert result.origins[0] == 9 and (result.origins + 10 <= 79).all()


def test_constant_offset_gives_hand_computed_errors():
    loads = constant_loads()
    offset = np.array([0.02, -0.02, 0.0, 0.0])
    result = backtest(loads, [Oracle(loads, offset, name="off")], [5], min_history=20,
                      n_origins=4)
    m = result.scores[("off", 5)].metrics
    assert np.allclose(m["error_rate"], 0.04)
    assert np.allclose(m["window_error"], 0.04)
    assert np.allclose(m["mean_error_ratio"], (0.02 / 0.4 + 0.02 / 0.3) / 4)
    assert np.allclose(m["imbalance_error"], (4 * 0.42 - 1.6) / 1.6)
    assert np.all(m["zero_actuals"] == 0)
    assert m["error_rate"].shape == (4, 2)


def test_each_horizon_is_scored_on_the_forecast_made_for_it():
    loads = constant_loads(40, 1)
    calls = []

    class Counting(Oracle):
        def forecast(self, horizon):
            calls.append(horizon)
            return super().forecast(horizon)

    result = backtest(loads, [Counting(loads)], [3, 8], origins=[10, 35])
    # origin 10: the longest forecast, then the 3-step one; 35 only has room for 3 steps
    assert calls == [8, 3, 3]
    assert result.scores[("oracle", 8)].fits.tolist() == [True, False]
    assert result.scores[("oracle", 3)].steps_scored.tolist() == [3, 3]


def test_a_forecast_tuned_per_horizon_is_credited_at_its_own_horizon():
    """auto and drift tune themselves per horizon: their 3-step forecast is not the first 3
    steps of their 8-step one, and each horizon's error is that of its own forecast."""
    loads = constant_loads(40, 1)

    class Tuned(Oracle):  # exact for 3 steps, off by 0.02 on two experts for longer ones
        def forecast(self, horizon):
            off = 0.0 if horizon <= 3 else np.array([0.02, -0.02, 0.0, 0.0])
            return super().forecast(horizon) + off

    result = backtest(loads, [Tuned(loads)], [3, 8], origins=[10, 20])
    assert np.allclose(result.scores[("oracle", 3)].metrics["error_rate"], 0.0)
    assert np.allclose(result.scores[("oracle", 8)].metrics["error_rate"], 0.04)


def test_gaps_in_the_trace_are_skipped_when_scoring():
    steps = np.r_[0:30, 33:50]  # steps 30-32 missing
    loads = constant_loads(steps=steps, n_layers=1)
    offset = np.zeros(4)
    result = backtest(loads, [Oracle(loads, offset)], [6], origins=[28])
    s = result.scores[("oracle", 6)]
    assert s.steps_scored.tolist() == [3]  # 29..34 present: 29, 33, 34
    assert s.metrics["error_rate"][0, 0] == pytest.approx(0.0)


def test_origins_are_labelled_with_each_layers_state():
    loads = constant_loads(50, 2)
    stable = np.zeros((2, 50), dtype=bool)
    stable[0, 20:] = True
    stable[1, 35:] = True
    result = backtest(loads, [Oracle(loads)], [5], stable=stable, origins=[10, 25, 40])
    assert result.stable.tolist() == [[False, False], [True, False], [True, True]]


def test_summary_table_is_the_one_centre_with_its_interval_per_state():
    loads = constant_loads(50, 2)
    offset = np.array([0.02, -0.02, 0.0, 0.0])  # every pair scores 4%
    stable = np.zeros((2, 50), dtype=bool)
    stable[0, 20:] = True
    result = backtest(loads, [Oracle(loads, offset, name="off"), Oracle(loads)], [5],
                      stable=stable, origins=[10, 25, 40])
    table = result.summary()
    row = {(r["predictor"], r["state"]): r for r in table.iter_rows(named=True)}
    assert row[("off", "all")]["error_rate"] == pytest.approx(0.04)
    assert row[("off", "all")]["lower"] == pytest.approx(0.04)  # no spread across origins
    assert row[("oracle", "all")]["error_rate"] == pytest.approx(0.0)
    assert row[("off", "all")]["pairs"] == 6 and row[("off", "all")]["origins"] == 3
    assert row[("off", "stable")]["pairs"] == 2 and row[("off", "transient")]["pairs"] == 4
    assert row[("off", "all")]["constant_bound"] == pytest.approx(0.0)  # shares never move
    assert row[("off", "all")]["fallback_rate"] == 0.0
    assert table.columns == ["predictor", "horizon", "state", "error_rate", "lower", "upper",
                             "constant_bound", "lookahead", "origins", "pairs",
                             "fallback_rate"]


def test_summary_centre_is_the_mean_over_origins_of_layer_means_inside_its_interval():
    from predictor_data import random_walk

    loads = random_walk(n_layers=3, n_steps=900, seed=4)
    stable = np.zeros((3, 900), dtype=bool)
    stable[1:, 400:] = True
    result = backtest(loads, ["naive", "sw_avg"], [50, 100], stable=stable, n_origins=9,
                      min_history=200)
    for r in result.summary().iter_rows(named=True):
        error = result.scores[(r["predictor"], r["horizon"])].metrics["error_rate"]
        mask = result.state_masks()[r["state"]] & np.isfinite(error)
        per_origin = [error[i][mask[i]].mean() for i in range(len(error)) if mask[i].any()]
        assert r["error_rate"] == pytest.approx(np.mean(per_origin))
        assert 0 <= r["lower"] <= r["error_rate"] <= r["upper"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_constant_forecast_scores_below_the_constant_bound(seed):
    """naive and a plain window mean hold their forecast constant: pair by pair, their error
    rate is at least the bound; sw_avg's recursive slide does not, and is not flagged."""
    from predictor_data import random_walk

    from moetrace.predictors.base import PredictorOptions

    loads = random_walk(n_layers=2, n_steps=1200, seed=seed)
    result = backtest(loads, ["naive", "sw_avg"], [100, 300], n_origins=8, min_history=300,
                      options=PredictorOptions(window=200))
    for h in result.horizons:
        bound = result.constant_bound[h]
        assert np.isfinite(bound).any()
        naive = result.scores[("naive", h)].metrics
        assert (naive["constant"][np.isfinite(bound)] == 1).all()
        assert (naive["error_rate"] >= bound - 1e-12)[np.isfinite(bound)].all()
        assert (result.scores[("sw_avg", h)].metrics["constant"][np.isfinite(bound)] == 0).any()


def test_the_constant_bound_binds_naive_on_a_simulated_trace(tmp_path):
    from moetrace.simulate import simulate_trace
    from moetrace.trace import read_trace

    path = simulate_trace(tmp_path / "t.parquet", preset="gpt3-125m", steps=1500, layers=2,
                          experts=8, tokens_per_step=20_000, seed=5)
    loads = read_trace(path).loads()
    result = backtest(loads, ["naive"], [100, 400], n_origins=10, min_history=300)
    for h in result.horizons:
        bound, error = result.constant_bound[h], result.scores[("naive", h)].metrics
        scored = np.isfinite(error["error_rate"])
        assert scored.any() and (error["constant"][scored] == 1).all()
        assert (error["error_rate"][scored] >= bound[scored] - 1e-12).all()
        assert (bound[scored] > 0).all()


def test_progress_is_reported_for_every_fit():
    loads = constant_loads(50, 1)
    seen = []
    backtest(loads, [Oracle(loads, name="a"), Oracle(loads, name="b")], [5], origins=[10, 20],
             progress=lambda done, total, label: seen.append((done, total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_choose_origins_stride_and_count():
    steps = np.arange(100)
    assert choose_origins(steps, [10], min_history=20, stride=30).tolist() == [19, 49, 79]
    spread = choose_origins(steps, [10, 20], min_history=20, n_origins=5)
    assert spread[0] == 19 and spread[-1] == 89 and len(spread) == 5
    gappy = np.r_[0:50, 70:100]
    assert set(choose_origins(gappy, [5], min_history=10, stride=10)) <= set(gappy)


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_history=95), "too short"),
    (dict(min_history=200), "at least 200 steps"),
    (dict(min_history=10, stride=0), "--stride"),
    (dict(min_history=10, stride=5, n_origins=3), "not both"),
])
def test_bad_settings_are_refused_up_front(kwargs, message):
    with pytest.raises(ParameterError, match=message):
        choose_origins(np.arange(100), [10], **kwargs)


def test_bad_origins_and_forecasts_are_refused():
    loads = constant_loads(30, 1)
    with pytest.raises(ParameterError, match="not a step"):
        backtest(loads, [Oracle(loads)], [5], origins=[100])
    with pytest.raises(ParameterError, match="no room"):
        backtest(loads, [Oracle(loads)], [5], origins=[27])

    class Wrong(Oracle):
        def forecast(self, horizon):
            return super().forecast(horizon)[:, :-1]

    # a predictor breaking its contract is a bug (exit 1), not the user's input (exit 2)
    with pytest.raises(InternalError, match="forecast shape"):
        backtest(loads, [Wrong(loads)], [5], origins=[10])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_predictor_runs_through_the_engine(name):
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(6) * 5, size=2)
    counts = np.stack([rng.multinomial(5000, p[layer], size=1500) for layer in range(2)])
    loads = Loads(np.arange(1500), counts, (0, 1))
    result = backtest(loads, [name], [100, 200], min_history=800, n_origins=3)
    for h in (100, 200):
        s = result.scores[(name, h)]
        assert s.metrics["error_rate"].shape == (3, 2)
        rate = s.metrics["error_rate"][s.fits]
        assert rate.size
        assert np.all((rate >= 0) & (rate <= 2))
        # sampling noise alone gives about 0.03 here; a forecast of stationary shares stays near
        assert np.all(rate < 0.2), (name, h, rate)


def test_the_look_ahead_reference_is_no_bound():
    """docs/metrics.md: on a stationary multinomial trace a 2,000-step window mean of the past
    scores below the look-ahead reference at 24 of 24 pairs (its 400-step window keeps more
    sampling noise); the constant bound stays below the window mean, as it must."""
    rng = np.random.default_rng(0)
    counts = rng.multinomial(2000, rng.dirichlet(np.ones(16) * 2), size=(2, 6000))
    loads = Loads(np.arange(6000), counts, (0, 1))

    class WindowMean:
        name, fallback = "mean2000", None

        def fit(self, history):
            self.mean = history.shares[:, -2000:].mean(axis=1, keepdims=True)
            return self

        def forecast(self, horizon):
            return np.repeat(self.mean, horizon, axis=1)

        def uncertainty(self, horizon):
            return None

    result = backtest(loads, [WindowMean()], [1000], n_origins=12, min_history=2000)
    error = result.scores[("mean2000", 1000)].metrics["error_rate"]
    scored = np.isfinite(error)
    assert scored.sum() == 24
    assert (error[scored] < result.lookahead[1000][scored]).sum() == 24
    assert (error[scored] >= result.constant_bound[1000][scored]).all()
