"""lstm: the untrained model is the baseline (a recursive sliding average), learns a periodic
toy trace (beats naive; validation loss far below the baseline's), deterministic, separate
training trace, retraining policy, torch settings restored, and the error without the extra."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from predictor_data import constant, periodic, random_walk

from moetrace.errors import MissingExtraError, ParameterError
from moetrace.predictors import PredictorOptions, make_predictor

torch = pytest.importorskip("torch")


def _error(forecast: np.ndarray, truth: np.ndarray) -> float:
    """Mean total-variation distance between forecast and true shares."""
    return float(np.abs(forecast - truth).sum(-1).mean() / 2)


def test_moving_baseline_by_hand():
    from moetrace.predictors.lstm import moving_baseline

    x = np.array([[1.0], [3.0], [5.0], [7.0]])
    np.testing.assert_allclose(moving_baseline(x, 2), [[1.0], [2.0], [4.0], [6.0]])


def test_untrained_model_forecasts_the_recursive_sliding_average_of_the_baseline():
    from moetrace.predictors.lstm import BASELINE, ShareLSTM, noise_scale, rollout
    from moetrace.predictors.sw_avg import sliding_window_average

    shares = random_walk(n_layers=2, n_steps=300, n_experts=6, seed=1).shares  # (2, 300, 6)
    flat = shares.transpose(1, 0, 2).reshape(300, -1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ShareLSTM(2, 6, noise_scale(flat), flat.mean(axis=0))
    out = rollout(model, flat, 20).transpose(1, 0, 2)  # (2, 20, 6)
    np.testing.assert_allclose(out, sliding_window_average(shares, 20, BASELINE), atol=1e-6)


def test_lstm_beats_naive_on_a_strongly_periodic_trace():
    loads = periodic(n_steps=2000, period=40)
    options = PredictorOptions(bucket=5, seed=0, horizons=(200,))
    history, truth = loads.upto(1599), loads.shares[:, 1600:1800]
    p = make_predictor("lstm", options).fit(history)
    lstm = p.forecast(200)
    naive = make_predictor("naive", options).fit(history).forecast(200)
    assert _error(lstm, truth) < 0.6 * _error(naive, truth)
    losses = p.model.validation_losses  # epoch 0 is the untrained (baseline) model
    assert min(losses) < 0.1 * losses[0]


def test_kept_weights_never_do_worse_than_the_baseline_on_validation():
    from moetrace.predictors.lstm import (
        MIN_IMPROVEMENT,
        _deterministic,
        rollout,
        validation_buckets,
    )

    loads = random_walk(n_steps=1600, seed=11)
    p = make_predictor("lstm", PredictorOptions(bucket=5, horizons=(100,))).fit(loads)
    losses = p.model.validation_losses
    flat = p._context
    split = len(flat) - validation_buckets(len(flat), 20)  # the rollout covers the horizon
    with _deterministic(0):  # as in training: one thread, deterministic kernels
        pred = rollout(p.model, flat[:split], len(flat) - split)
    truth = flat[split:].reshape(pred.shape)
    kept = float((((pred - truth) * loads.n_experts) ** 2).mean())
    # the kept weights are an epoch's (the last that improved by MIN_IMPROVEMENT), never
    # worse than the untrained baseline (epoch 0)
    assert any(kept == pytest.approx(loss, rel=1e-6) for loss in losses)
    assert kept <= losses[0] and kept <= min(losses) * (1 + MIN_IMPROVEMENT)


def test_same_seed_same_forecast():
    loads = random_walk(n_steps=600, seed=2)
    options = PredictorOptions(bucket=10, seed=4)
    a = make_predictor("lstm", options).fit(loads).forecast(100)
    b = make_predictor("lstm", options).fit(loads).forecast(100)
    np.testing.assert_array_equal(a, b)


def test_separate_training_trace_is_used_once_and_checked():
    train = periodic(n_layers=1, n_steps=1000)
    p = make_predictor("lstm", PredictorOptions(bucket=5), train=train)
    target = periodic(n_layers=1, n_steps=600)
    model = p.fit(target.upto(300)).model
    assert p.fit(target.upto(599)).model is model  # trained on the other trace: kept
    with pytest.raises(ParameterError, match="training trace has 1 layers x 4 experts"):
        make_predictor("lstm", PredictorOptions(bucket=5), train=train).fit(constant())


def test_retrains_only_after_the_history_grew_by_retrain_every_or_doubled():
    loads = random_walk(n_steps=1200, seed=3)
    p = make_predictor("lstm", PredictorOptions(bucket=10))
    p.retrain_every = 400
    first = p.fit(loads.upto(599)).model
    assert p.fit(loads.upto(899)).model is first
    assert p.fit(loads.upto(999)).model is not first
    later = p.model
    assert p.fit(loads.upto(899)).model is not later  # an earlier origin retrains
    short = make_predictor("lstm", PredictorOptions(bucket=10))
    model = short.fit(loads.upto(299)).model
    assert short.fit(loads.upto(579)).model is model
    assert short.fit(loads.upto(599)).model is not model


def test_global_torch_settings_are_restored():
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    state = torch.random.get_rng_state()
    make_predictor("lstm", PredictorOptions(bucket=10)).fit(random_walk()).forecast(50)
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic
    assert torch.equal(torch.random.get_rng_state(), state)


def test_without_torch_a_clear_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    monkeypatch.delitem(sys.modules, "moetrace.predictors.lstm", raising=False)
    with pytest.raises(MissingExtraError, match=r"moetrace\[lstm\]"):
        make_predictor("lstm")


def test_too_short_a_history_falls_back_to_the_baseline_and_says_why():
    loads = random_walk(n_steps=600, seed=2)
    p = make_predictor("lstm", PredictorOptions(bucket=10, horizons=(1000,))).fit(loads)
    assert p.fallback is not None and "too little history to train" in p.fallback
    assert not hasattr(p.model, "validation_losses")  # not trained
    from moetrace.predictors.lstm import BASELINE
    baseline = make_predictor("sw_avg", PredictorOptions(bucket=10, window=10 * BASELINE))
    np.testing.assert_allclose(p.forecast(100), baseline.fit(loads).forecast(100), atol=1e-6)
