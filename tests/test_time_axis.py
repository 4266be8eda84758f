"""One time axis: every number of steps means training steps, on a trace of every step and
on its every-10th-step subsample alike."""

from __future__ import annotations

import numpy as np
import pytest

from moetrace.backtest import backtest, choose_origins
from moetrace.errors import ParameterError
from moetrace.predictors import PredictorOptions, make_predictor
from moetrace.simulate import simulate_counts
from moetrace.simulate.config import make_config
from moetrace.states import analyze_loads
from moetrace.trace.shares import Loads


@pytest.fixture(scope="module")
def full():
    counts, _ = simulate_counts(make_config("gpt3-125m", steps=6000, layers=2), seed=3)
    return Loads(np.arange(6000), counts, (0, 1))


def every(loads: Loads, k: int) -> Loads:
    rows = np.arange(0, loads.n_steps, k)
    return Loads(loads.steps[rows], loads.counts[:, rows], loads.layers)


def test_the_interval_and_samples_of_a_sampled_trace(full):
    sub = every(full, 10)
    assert (full.interval, sub.interval) == (1, 10)
    assert sub.span == full.span == 6000
    assert sub.samples(1000) == 100 and full.samples(1000) == 1000
    assert sub.last(1000).n_steps == 100 and full.last(1000).n_steps == 1000
    assert sub.upto(2995).steps[-1] == 2990
    with pytest.raises(ParameterError, match="needs 8,000 steps = 800 samples of history"):
        sub.require(8000, "x")


def test_origins_and_min_history_are_training_steps(full):
    sub = every(full, 10)
    a = choose_origins(full.steps, [1000], min_history=1000, n_origins=5)
    b = choose_origins(sub.steps, [1000], min_history=1000, n_origins=5)
    assert a[0] == 999 and b[0] == 990  # 1,000 steps of history either way
    assert np.all(np.abs(a - b) < 10)  # the same training steps, snapped to samples


@pytest.mark.parametrize("name", ["naive", "sw_avg", "arima"])
def test_forecasts_of_the_subsample_track_those_of_the_full_trace(full, name):
    sub = every(full, 10)
    options = PredictorOptions(bucket=20 if name == "arima" else None)
    f_full = make_predictor(name, options).fit(full.upto(4990)).forecast(1000)
    f_sub = make_predictor(name, options).fit(sub.upto(4990)).forecast(1000)
    assert f_sub.shape == f_full.shape == (2, 1000, 16)  # per training step, both
    gap = np.abs(f_sub.mean(axis=1) - f_full.mean(axis=1)).sum(axis=-1).max()
    noise = np.abs(np.diff(full.shares[:, 4000:5000], axis=1)).sum(axis=-1).mean()
    assert gap < noise, (gap, noise)  # the same window in steps: far less than a step's noise


def test_sw_avg_window_is_in_steps_not_rows(full):
    sub = every(full, 10)
    p = make_predictor("sw_avg", PredictorOptions(window=500)).fit(sub.upto(4990))
    assert p._window_buckets == 50  # 500 steps = 50 samples
    want = sub.shares[:, sub.steps > 4990 - 500][:, :50].mean(axis=1)
    np.testing.assert_allclose(p.forecast(10)[:, 0], want / want.sum(-1, keepdims=True))


def test_analysis_and_backtest_of_the_subsample_use_training_steps(full):
    sub = every(full, 10)
    a_full = analyze_loads(full, window=200)
    a_sub = analyze_loads(sub, window=200)  # 20 samples
    assert a_sub.interval == 10 and "600 samples, every 10" in a_sub.describe_steps()
    for la_f, la_s in zip(a_full.layers, a_sub.layers):
        assert abs((la_s.stable_from or 0) - (la_f.stable_from or 0)) <= 300
    result = backtest(sub, ["naive", "sw_avg"], [1000], n_origins=4, min_history=1000)
    assert result.origins[0] == 990
    scores = result.scores[("sw_avg", 1000)]
    assert (scores.steps_scored[scores.fits] == 100).all()  # 1,000 steps hold 100 samples


def test_a_real_sampled_recording_gets_a_default_report_in_training_steps(tmp_path):
    """sample_traces/demo-sampled: the demo trainer recorded with --every 10 into rank parts
    (the recorder's own format), read and reported with no options through the entry point."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from moetrace.trace import read_trace

    root = Path(__file__).resolve().parents[1]
    sample = root / "sample_traces" / "demo-sampled"
    trace = read_trace(sample)
    assert trace.interval == 10 and len(trace.files) == 4
    assert trace.steps[0] == 0 and trace.steps[-1] == 1990 and trace.gaps == []
    proc = subprocess.run([sys.executable, "-m", "moetrace", "report", str(sample), "-o",
                           str(tmp_path / "rep"), "--json"], capture_output=True, text=True,
                          cwd=root)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["trace"]["interval"] == 10
    horizons = doc["parameters"]["horizons"]
    assert all(h % 10 == 0 and h <= 2000 for h in horizons)  # shrunk, in training steps
    assert doc["trace"]["samples_per_horizon"] == {str(h): h // 10 for h in horizons}
    assert all(o["step"] % 10 == 0 for o in doc["origins"])  # origins are recorded steps
    assert doc["parameters"]["shrunk"]  # and the report says what was shrunk


def test_steps_become_rows_in_one_place_when_the_interval_does_not_divide_the_horizon():
    """Every 600th step: a 1,000-step horizon after a recorded step holds one sample (the
    steps in (t, t + 1000] are t + 600 only), a 1,000-step window to the nearest row two."""
    steps = np.arange(0, 6000, 600)
    loads = Loads(steps, np.ones((1, len(steps), 2), dtype=np.int64), (0,))
    assert loads.interval == 600
    assert loads.horizon_samples(1000) == 1 == len(loads.between(1200, 2200).steps)
    assert loads.samples(1000) == 2
    assert loads.horizon_samples(100) == 1  # never zero
    assert loads.index(1200) == 3 and loads.index(1199) == 2 and loads.index(-1) == 0
    assert loads.rows(1200, 2400) == slice(3, 5)
    assert list(loads.between(1200, 2400).steps) == [1800, 2400]
    assert list(loads.upto(2400).steps) == [0, 600, 1200, 1800, 2400]
