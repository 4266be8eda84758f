"""The simulator: exact token sums, determinism, ground truth that matches the dynamics, CLI."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.errors import ParameterError
from moetrace.simulate import (
    Truth,
    ground_truth,
    iter_counts,
    make_config,
    simulate_counts,
    simulate_trace,
    volatility,
)
from moetrace.trace import read_trace

TOKENS_350M = 256 * 2048


@pytest.fixture(scope="module")
def sim350():
    """12 layers x 128 experts x 2,000 steps of the 350M preset (default transient)."""
    config = make_config("gpt3-350m", steps=2000)
    counts, truth = simulate_counts(config, seed=3)
    return config, counts, truth


def _step_change(counts: np.ndarray) -> np.ndarray:
    """Sum over experts of |share(t) - share(t-1)|: (L, T-1)."""
    shares = counts / counts.sum(axis=-1, keepdims=True)
    return np.abs(np.diff(shares, axis=1)).sum(axis=-1)


def _multinomial_step_change(shares: np.ndarray, n: int) -> float:
    """Expected step change if only multinomial sampling moved the shares (fixed p)."""
    sd = np.sqrt(2 * shares * (1 - shares) / n)  # difference of two independent draws
    return float(np.sqrt(2 / np.pi) * sd.sum())


def test_every_step_and_layer_sums_to_the_tokens(sim350):
    config, counts, _ = sim350
    assert counts.shape == (12, 2000, 128)
    assert counts.dtype == np.int64
    assert (counts >= 0).all()
    assert (counts.sum(axis=-1) == TOKENS_350M).all()


def test_top_k_counts_every_slot():
    config = make_config("gpt3-125m", steps=500, top_k=2, tokens_per_step=1000)
    counts, _ = simulate_counts(config, seed=1)
    assert counts.shape == (6, 500, 16)
    assert (counts.sum(axis=-1) == 2000).all()


def test_same_seed_same_counts_whatever_the_chunking():
    config = make_config("gpt3-125m", steps=1700, layers=2)
    whole, _ = simulate_counts(config, seed=5)
    again, _ = simulate_counts(config, seed=5)
    chunked = np.concatenate([c for _, c in iter_counts(config, 5, chunk_steps=1500)], axis=1)
    assert np.array_equal(whole, again)
    assert np.array_equal(whole, chunked)
    other, _ = simulate_counts(config, seed=6)
    assert not np.array_equal(whole, other)


def test_chunks_are_whole_random_streams():
    config = make_config("gpt3-125m", steps=100)
    with pytest.raises(ParameterError, match="multiple of 500"):
        next(iter_counts(config, 0, chunk_steps=300))


def test_default_transient_is_longer_in_shallower_layers(sim350):
    config, _, truth = sim350
    # 350M reaches its preset lengths (6,000 .. 3,000) at 20,000 steps; 2,000 steps scale by 0.1
    assert config.transient[0] == 600 and config.transient[-1] == 300
    assert truth.boundaries == list(config.transient)
    assert all(a > b for a, b in zip(truth.boundaries, truth.boundaries[1:]))
    full = make_config("gpt3-125m", steps=30_000)
    assert full.transient == (5000, 4500, 4000, 3500, 3000, 2500)


def test_transient_swings_far_more_than_the_stable_state(sim350):
    config, counts, truth = sim350
    change = _step_change(counts)
    shares = counts / counts.sum(axis=-1, keepdims=True)
    for layer, boundary in enumerate(truth.boundaries):
        early = change[layer, : boundary // 4].mean()
        stable = change[layer, boundary:].mean()
        floor = _multinomial_step_change(shares[layer, boundary:].mean(axis=0), TOKENS_350M)
        assert early > 5 * stable, layer
        # stable: step-to-step noise is multinomial sampling, not more (drift is slow)
        assert stable == pytest.approx(floor, rel=0.05), layer


def test_shallow_layers_swing_harder(sim350):
    _, counts, truth = sim350
    change = _step_change(counts)
    first, last = change[0, :100].mean(), change[-1, :100].mean()
    assert first > 1.5 * last


def test_stable_windowed_variance_is_sampling_noise_and_transient_is_not(sim350):
    config, counts, truth = sim350
    shares = counts / counts.sum(axis=-1, keepdims=True)
    layer, boundary = 0, truth.boundaries[0]
    sampling_var = (shares[layer] * (1 - shares[layer]) / TOKENS_350M).mean(axis=0)
    windows = {"stable": shares[layer, boundary: boundary + 200],
               "end of transient": shares[layer, boundary - 200: boundary]}
    ratio = {name: float((w.var(axis=0) / sampling_var).mean()) for name, w in windows.items()}
    assert ratio["stable"] < 1.3
    assert ratio["end of transient"] > 10 * ratio["stable"]


def test_experts_are_persistently_unequal(sim350):
    _, counts, truth = sim350
    for layer, boundary in enumerate(truth.boundaries):
        share = counts[layer, boundary:].sum(axis=0) / counts[layer, boundary:].sum()
        assert share.max() > 3 * share.min(), layer


def test_volatility_envelope_falls_to_exactly_zero_at_the_boundary():
    config = make_config("gpt3-125m", steps=1000, transient=[400, 0, 1000, 2000, 100, 0])
    v = volatility(config, 0, 1000)
    assert v[0, 0] == pytest.approx(config.amplitude)
    assert v[0, 200] == pytest.approx(config.amplitude / 2)  # linear decay
    assert v[0, 399] > 0 and (v[0, 400:] == 0).all()
    assert (v[1] == 0).all()
    assert (v[2] > 0).all() and (v[3] > 0).all()
    assert (np.diff(v[0, :400]) < 0).all()


def test_transient_zero_and_never_stable():
    config = make_config("gpt3-125m", steps=1000, transient=[0, 999, 1000, 5000, 10, 0])
    truth = ground_truth(config)
    assert truth.boundaries == [0, 999, None, None, 10, 0]
    assert [s.state for s in truth.segments[0]] == ["stable"]
    assert [(s.start, s.end, s.state) for s in truth.segments[2]] == [(0, 1000, "transient")]
    counts, _ = simulate_counts(config, seed=0)
    change = _step_change(counts)
    assert change[0, :200].mean() < 1.2 * change[0, 500:].mean()
    assert change[2, :200].mean() > 5 * change[0, :200].mean()


def test_reentry_restarts_fluctuation_and_shows_in_the_truth():
    config = make_config("gpt3-125m", steps=3000, reentries=[(2000, 400)])
    truth = ground_truth(config)
    b0 = config.transient[0]
    assert [(s.start, s.end, s.state) for s in truth.segments[0]] == [
        (0, b0, "transient"), (b0, 2000, "stable"), (2000, 2400, "transient"),
        (2400, 3000, "stable")]
    assert truth.boundaries == [2400] * 6
    counts, _ = simulate_counts(config, seed=2)
    change = _step_change(counts)
    assert (change[:, 2000:2100].mean(axis=1) > 5 * change[:, 1800:2000].mean(axis=1)).all()
    assert (change[:, 2500:].mean(axis=1) < 1.2 * change[:, 1800:2000].mean(axis=1)).all()
    mask = truth.stable_mask(3000)
    assert mask[0, :b0].sum() == 0 and mask[0, 2000:2400].sum() == 0
    assert mask[0].sum() == (2000 - b0) + 600


def test_overlapping_reentry_merges_with_the_initial_transient():
    config = make_config("gpt3-125m", steps=3000, transient=1000, reentries=[(800, 500)])
    assert [(s.start, s.end, s.state) for s in ground_truth(config).segments[0]] == [
        (0, 1300, "transient"), (1300, 3000, "stable")]


def test_sliding_window_forecast_error_is_near_the_sampling_floor():
    """Stable 350M layer: a 1,000-step window average forecasts the next 1,000 steps within a
    small margin above what multinomial noise alone allows (the paper: ~1.3% at 1k)."""
    config = make_config("gpt3-350m", steps=8000, layers=1, transient=0)
    counts, _ = simulate_counts(config, seed=4)
    shares = counts[0] / TOKENS_350M
    errors, floors = [], []
    for origin in range(1000, 7000, 250):
        forecast = shares[origin - 1000: origin].mean(axis=0)
        actual = shares[origin: origin + 1000]
        errors.append(np.abs(actual - forecast).sum(axis=-1).mean())
        p = actual.mean(axis=0)
        floors.append(np.sqrt(2 / np.pi) * np.sqrt(p * (1 - p) / TOKENS_350M).sum())
    error, floor = float(np.mean(errors)), float(np.mean(floors))
    assert 0.0115 < floor < 0.0130
    assert floor < error < 1.4 * floor


def test_trace_file_holds_counts_and_truth(tmp_path):
    out = simulate_trace(tmp_path / "t.parquet", preset="gpt3-125m", steps=700, seed=9,
                         reentries=[(600, 50)])
    trace = read_trace(out)
    assert (trace.n_layers, trace.n_experts, trace.n_steps) == (6, 16, 700)
    meta = trace.metadata
    assert (meta.source, meta.top_k, meta.tokens_per_step) == ("simulated", 1, TOKENS_350M)
    assert meta.extra["seed"] == 9 and meta.extra["preset"] == "gpt3-125m"
    assert meta.extra["config"]["reentries"] == [[600, 50]]
    config = make_config("gpt3-125m", steps=700, reentries=[(600, 50)])
    truth = Truth.from_extra(meta.extra)
    assert truth == ground_truth(config)
    assert meta.extra["true_boundaries"] == [650] * 6
    for segs in meta.extra["true_segments"]:
        assert segs[0]["start"] == 0 and segs[-1]["end"] == 700
        assert all(a["end"] == b["start"] for a, b in zip(segs, segs[1:]))
    counts, _ = simulate_counts(config, seed=9)
    assert np.array_equal(trace.loads().counts, counts)


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "gpt3-1t"}, "unknown simulation preset 'gpt3-1t'"),
    ({"preset": "gpt3-125m", "steps": 0}, "--steps must be an integer >= 1"),
    ({"preset": "gpt3-125m", "experts": 1}, "--experts must be an integer >= 2"),
    ({"preset": "gpt3-125m", "top_k": 17}, "--top-k 17 exceeds --experts 16"),
    ({"preset": "gpt3-125m", "tokens_per_step": -5}, "--tokens-per-step must be"),
    ({"preset": "gpt3-125m", "transient": [1, 2]}, "2 lengths for 6 layers"),
    ({"preset": "gpt3-125m", "transient": -1}, "transient of layer 0"),
    ({"preset": "gpt3-125m", "reentries": [(5,)]}, "(start, duration) pair"),
    ({"preset": "gpt3-125m", "steps": 100, "reentries": [(100, 5)]}, "past the last step 99"),
    ({"preset": "gpt3-125m", "depth_ratio": 2.0}, "depth_ratio must be between 0 and 1"),
    ({"preset": "gpt3-125m", "warp": 1}, "unknown simulation setting 'warp'"),
])
def test_bad_settings_raise_parameter_error(tmp_path, kwargs, message):
    out = tmp_path / "t.parquet"
    with pytest.raises(ParameterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        simulate_trace(out, **kwargs)
    assert not out.exists()


def test_negative_seed_is_a_parameter_error(tmp_path):
    with pytest.raises(ParameterError, match="--seed must be >= 0"):
        simulate_trace(tmp_path / "t.parquet", preset="gpt3-125m", steps=10, seed=-1)
    assert list(tmp_path.iterdir()) == []


def test_cli_record_simulate(tmp_path):
    out = tmp_path / "t.parquet"
    result = CliRunner().invoke(app, ["record", "--simulate", "gpt3-125m", "--steps", "600",
                                      "--layers", "2", "--experts", "8", "--seed", "1",
                                      "-o", str(out)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    trace = read_trace(out)
    assert (trace.n_layers, trace.n_experts, trace.n_steps) == (2, 8, 600)
    assert trace.metadata.extra["true_boundaries"] == [300, 150]  # 5000, 2500 scaled by 0.06
    assert (trace.step_totals.get_column("tokens") == TOKENS_350M).all()


def test_cli_bad_preset_exits_2_in_one_line(tmp_path):
    out = tmp_path / "t.parquet"
    result = run_cli("record", "--simulate", "gpt3-7b", "-o", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "moetrace: error: unknown simulation preset 'gpt3-7b' (known: gpt3-125m, gpt3-350m, "
        "deepseek-v3, hotspot, burst)"]
    assert not out.exists()


def test_entry_point_350m_trace_is_complete(tmp_path):
    """The issue's acceptance check: 12 layers x 128 experts, 524,288 tokens every step."""
    out = tmp_path / "t.parquet"
    result = run_cli("record", "--simulate", "gpt3-350m", "--steps", "2000", "-o", str(out))
    assert result.returncode == 0, result.stderr
    trace = read_trace(out)
    assert (trace.n_layers, trace.n_experts, trace.n_steps) == (12, 128, 2000)
    totals = trace.step_totals
    assert totals.height == 12 * 2000
    assert (totals.get_column("tokens") == TOKENS_350M).all()
    assert trace.metadata.extra["true_boundaries"] == [
        round(600 - 300 * i / 11) for i in range(12)]
