"""auto and drift on traces where the right answer is known; calibrated intervals and the
expected error on a stationary process whose quantiles are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from moetrace.backtest import backtest
from moetrace.calibrate import state_coverage
from moetrace.predictors import PredictorOptions, make_predictor
from moetrace.predictors.inner import (conformal_interval, inner_origins, rule_scores,
                                       valid_origins)
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


def logit_walk(kind: str, seed: int, n_steps: int = 8000, n_experts: int = 16,
               n_layers: int = 2, tokens: int = N) -> Loads:
    """Shares whose logits follow a random walk: steady (``walk``: a trailing mean of some
    tens of steps is the right forecast) or slowing like 1/t (``slowing``: the drift of real
    training, which settles for thousands of steps after its transient)."""
    rng = np.random.default_rng(seed)
    base = np.log(rng.dirichlet(np.ones(n_experts) * 4))
    noise = rng.normal(0, 1, (n_layers, n_steps, n_experts))
    if kind == "walk":
        steps = noise * 0.0015
    else:
        steps = noise * 0.02 * (300 / (np.arange(1, n_steps + 1) + 300))[None, :, None]
    z = base + np.cumsum(steps, axis=1)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    counts = rng.multinomial(tokens, p.reshape(-1, n_experts)).reshape(p.shape)
    return Loads(np.arange(n_steps), counts, tuple(range(n_layers)))


class TrailingMean:
    """The mean of the last w steps, held: the simple peer auto must not fall behind."""

    fallback = None

    def __init__(self, w: int):
        self.w, self.name = w, f"mean({w})"

    def fit(self, history):
        self.level = history.shares[:, -self.w:].mean(axis=1)
        return self

    def forecast(self, horizon):
        return np.repeat(self.level[:, None], horizon, axis=1)

    def uncertainty(self, horizon):
        return None


def test_auto_is_not_behind_the_trailing_mean_that_is_right():
    """On a steady random walk the right forecast is a trailing mean of some tens of steps;
    auto (which chose only between a 100-step level and trends) was 2.4% behind the best of
    them; averaging its best rules, windows of 20 to 1,000 steps among them, it is within
    1.5%."""
    loads = logit_walk("walk", seed=0, tokens=200_000)
    peers = [TrailingMean(w) for w in (10, 20, 40, 80)]
    result = backtest(loads, ["auto", *peers], [1000], n_origins=16, min_history=2000,
                      lookahead_radius=None)
    error = {name: np.nanmean(result.scores[(name, 1000)].metrics["error_rate"])
             for name in result.predictors}
    best = min(error[p.name] for p in peers)
    assert error["auto"] <= 1.015 * best, error


def test_intervals_follow_a_drift_that_slows_down():
    """Real training's shares drift less and less after the transient, so the errors an
    interval is calibrated from (made a horizon ago) overstate today's: without scaling
    them to how much the shares move now, 80% intervals held 91-92% of the mean shares."""
    for seed in (0, 1, 2):
        loads = logit_walk("slowing", seed=seed, tokens=500_000)
        stable = np.ones((loads.n_layers, loads.n_steps), dtype=bool)
        result = backtest(loads, ["auto"], [1000], n_origins=16, min_history=2000,
                          stable=stable, lookahead_radius=None)
        coverage = state_coverage(result, "auto", 1000)
        assert coverage.stated == coverage.forecasts  # every forecast has an interval
        assert 0.72 <= coverage.pooled <= 0.88, (seed, coverage)


def test_a_layer_stable_for_less_than_a_horizon_has_an_interval_and_a_sound_expected_error():
    """A layer that settled 400 to 2,300 steps before the origin: it has no inner origin a
    whole horizon after its onset, so auto calibrates it at a shorter horizon (before, it
    had no interval at 30% of these origins) and its windows start at the first bucket
    after the onset (before, the onset's own bucket, of the transient, made the expected
    error 50x the realised at some origins)."""
    rng = np.random.default_rng(1)
    a, b = rng.dirichlet(np.ones(32) * 5), rng.dirichlet(np.ones(32) * 5)
    shares = np.empty((1, 7000, 32))
    shares[0, :3000] = a
    shares[0, 3000:3500] = rng.dirichlet(np.ones(32) * 3, size=(20,)).repeat(25, axis=0)
    shares[0, 3500:] = b
    loads = sampled(shares, seed=2)
    inside = []
    for origin in range(3900, 5900, 100):
        model = make_predictor("auto", PredictorOptions(horizons=(1000,)))
        u = model.fit(loads.upto(origin)).uncertainty(1000)
        assert np.isfinite(u.lower).all() and np.isfinite(u.upper).all(), origin
        future = loads.shares[0, origin + 1:origin + 1001]
        inside.append((u.lower[0] <= future.mean(0)) & (future.mean(0) <= u.upper[0]))
        realised = np.abs(model.forecast(1000)[0] - future).sum(-1).mean()
        assert 0.5 * realised <= u.expected_error[0] <= 2 * realised, origin
    assert 0.75 <= np.mean(inside) <= 0.95


def test_a_window_rule_is_the_mean_of_its_window_and_reads_nothing_before_it():
    """window(b): per layer the mean of the last b buckets, from a stable layer's onset
    bucket once the origin is past it; buckets before the window are never read (NaN there
    changes nothing), so a call costs the window, not the history (the replay's re-plans)."""
    from moetrace.predictors.auto import window_rule

    rng = np.random.default_rng(3)
    buckets = rng.random((3, 40, 5))
    start = np.array([-1, 36, 10])  # transient; stable from bucket 36; stable long before
    seen = buckets.copy()
    seen[:, :30] = np.nan  # before every layer's window of 10
    out = window_rule(10, start)(seen, 4)
    assert out.shape == (3, 4, 5) and np.isfinite(out).all()
    np.testing.assert_allclose(out[0, 0], buckets[0, 30:].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out[1, 2], buckets[1, 36:].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out[2, 3], buckets[2, 30:].mean(axis=0), rtol=1e-12)
    # two windows starting at the same bucket agree to the last bit (an exact tie)
    assert (window_rule(4, start)(buckets, 1)[1] == window_rule(8, start)(buckets, 1)[1]).all()


def test_the_movement_trend_recovers_a_steady_slowing_and_shrinks_old_residuals():
    """Shares settling exponentially (rate r per bucket): the fitted slope of log movement is
    -r, and decay() scales a residual made at an older origin down by about exp(-r d)
    averaged in log with the measured ratio (which is the same here), bounded by its cap."""
    from moetrace.predictors.inner import TREND_POSITIONS, decay, movement_trend

    r, n = 0.01, 400
    base = np.array([0.4, 0.3, 0.2, 0.1])
    amp = np.array([0.02, -0.01, -0.005, -0.005])
    t = np.arange(n)[:, None]
    buckets = (base + amp * np.exp(-r * t))[None]  # (1, n, 4), rows sum to 1
    origins = np.array([360, 300, 240])
    slope = movement_trend(buckets, origins, 10, np.array([-1]))
    assert TREND_POSITIONS >= 3 and abs(slope[0] + r) < 0.05 * r
    factor = decay(buckets, origins, 10, np.array([0]), cap=100.0)[:, 0]
    np.testing.assert_allclose(np.log(factor), -r * (n - origins), rtol=0.05)
    # a stable layer whose onset leaves 2 positions with a known movement (x - 2w >= onset
    # for the last two of 240, 250.7, ..., 400): no trend
    assert np.isnan(movement_trend(buckets, origins, 10, np.array([369]))[0])


def test_decay_averages_the_ratio_at_the_origin_and_the_trend_in_log(monkeypatch):
    """On a noisy settling trace the two estimates differ; decay() with the trend's weight at
    0 is the ratio alone, at 1 the trend alone, and at the default 0.5 their geometric mean
    (inside the caps)."""
    from moetrace.predictors import inner

    rng = np.random.default_rng(5)
    n, experts = 400, 8
    steps = rng.normal(0, 1, (n, experts)) * np.exp(-0.006 * np.arange(n))[:, None] * 2e-3
    shares = np.clip(1 / experts + np.cumsum(steps, axis=0), 1e-3, None)
    buckets = (shares / shares.sum(axis=1, keepdims=True))[None]
    origins, start = np.array([380, 340, 300, 260]), np.array([0])
    factor = {}
    for weight in (0.0, 1.0, 0.5):
        monkeypatch.setattr(inner, "TREND_WEIGHT", weight)
        factor[weight] = inner.decay(buckets, origins, 10, start, cap=1e6)[:, 0]
    assert not np.allclose(factor[0.0], factor[1.0], rtol=0.05)  # they do differ here
    np.testing.assert_allclose(factor[0.5], np.sqrt(factor[0.0] * factor[1.0]), rtol=1e-12)
    slope = inner.movement_trend(buckets, origins, 10, start)[0]
    np.testing.assert_allclose(np.log(factor[1.0]), slope * (n - origins), rtol=1e-12)


def test_movement_reads_only_the_span_its_positions_need_and_respects_the_onset():
    """movement(): per position the median over experts of |mean of the last w buckets - mean
    of the w before| on the binomial scale, NaN where the 2w buckets reach before a stable
    layer's onset; buckets before the earliest position's 2w are never read."""
    from moetrace.predictors.inner import binomial_scale, movement

    rng = np.random.default_rng(8)
    buckets = rng.dirichlet(np.ones(4), (2, 100))  # (2, 100, 4)
    positions, w, start = np.array([60, 80, 100]), 5, np.array([-1, 65])
    seen = buckets.copy()
    seen[:, :50] = np.nan
    got = movement(seen, positions, w, start)
    for i, x in enumerate(positions):
        recent = buckets[:, x - w:x].mean(axis=1)
        before = buckets[:, x - 2 * w:x - w].mean(axis=1)
        want = np.median(np.abs(recent - before) / binomial_scale(recent), axis=1)
        want[1] = want[1] if x - 2 * w >= 65 else np.nan
        np.testing.assert_allclose(got[i], want, rtol=1e-10)
    assert np.isnan(got[0, 1]) and np.isfinite(got[1:, 1]).all()


def test_rules_are_ranked_by_the_geometric_mean_of_their_inner_errors():
    """An early origin where every rule errs many times more than now does not choose the
    rules: rule 0 is the better at two of three origins and loses only at the old one."""
    errors = np.array([[[0.05], [0.05], [0.80]],   # rule 0 at origins (newest first)
                       [[0.20], [0.20], [0.20]]])  # rule 1
    scores = rule_scores(errors, None)
    assert scores[:, 0] == pytest.approx([(0.05 * 0.05 * 0.80) ** (1 / 3), 0.20])
    assert scores[0, 0] < scores[1, 0]  # the arithmetic mean (0.30 against 0.20) says otherwise
    valid = np.array([[True], [True], [False]])
    assert rule_scores(errors, valid)[:, 0] == pytest.approx([0.05, 0.20])
    assert np.isnan(rule_scores(errors, np.zeros((3, 1), dtype=bool))).all()
    assert np.isfinite(rule_scores(np.zeros((2, 3, 1)), None)).all()  # an exact rule ranks


@pytest.mark.parametrize("name", ["auto", "drift"])
def test_a_forecast_for_each_asked_horizon_is_the_one_fitted_for_that_horizon_alone(name):
    """The report's 1,000-step row is what `predict --horizon 1000` forecasts: fitted for
    (1,000, 2,000) steps, each horizon's forecast (and auto's interval) is that of a fit for
    it alone, and a horizon between them gets the longer one's tuning. On a slow wave the
    tunings differ: a trend that follows it for 1,000 steps overshoots over 2,000."""
    t = np.arange(8000)
    wave = 0.5 * np.sin(2 * np.pi * t / 3000)[:, None] * [1, -1, 0.5, -0.5]
    shares = np.exp(np.log([0.4, 0.3, 0.2, 0.1]) + wave)
    loads = sampled((shares / shares.sum(axis=1, keepdims=True))[None], seed=5).upto(5999)
    both = make_predictor(name, PredictorOptions(horizons=(1000, 2000))).fit(loads)
    alone = {h: make_predictor(name, PredictorOptions(horizons=(h,))).fit(loads)
             for h in (1000, 2000)}
    for h in (1000, 2000):
        np.testing.assert_array_equal(both.forecast(h), alone[h].forecast(h))
    assert np.abs(both.forecast(1000) - both.forecast(2000)[:, :1000]).max() > 0.01
    np.testing.assert_array_equal(both.forecast(1500), alone[2000].forecast(1500))
    if name == "auto":
        for h in (1000, 2000):
            mine, theirs = both.uncertainty(h), alone[h].uncertainty(h)
            np.testing.assert_array_equal(mine.lower, theirs.lower)
            np.testing.assert_array_equal(mine.expected_error, theirs.expected_error)
