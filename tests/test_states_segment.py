"""Boundary search and labelling: known breaks, coverage labels, segments, scale invariance."""

from __future__ import annotations

import numpy as np
import pytest

from moetrace.errors import ParameterError
from moetrace.states import STABLE, TRANSIENT, Segment, analyze_loads
from moetrace.states.segment import (
    binary_segmentation,
    segments_from_labels,
    series_noise_sd,
    stable_from,
    step_labels,
)
from moetrace.trace import Loads


def test_binary_segmentation_finds_known_breaks():
    rng = np.random.default_rng(0)
    y = np.concatenate([np.full(100, 3.0), np.full(80, 1.0), np.full(120, 0.0)])
    y += 0.2 * rng.standard_normal(len(y))
    penalty = 2 * 0.04 * np.log(len(y)) * 3
    breaks = binary_segmentation(y, penalty, min_size=5)
    assert len(breaks) == 2
    assert abs(breaks[0] - 100) <= 2 and abs(breaks[1] - 180) <= 2


def test_binary_segmentation_leaves_pure_noise_whole():
    rng = np.random.default_rng(1)
    y = rng.standard_normal(500)
    assert binary_segmentation(y, 3 * np.log(500), min_size=4) == []


def test_series_noise_sd_of_white_noise():
    rng = np.random.default_rng(2)
    assert series_noise_sd(0.5 * rng.standard_normal(20_000), lag=4) == pytest.approx(0.5,
                                                                                      rel=0.05)


def test_step_labels_cover_the_steps_of_stable_windows():
    # windows of 4 steps starting at 0, 2, 4, 6 over 10 steps; only the last two are stable
    got = step_labels(np.array([False, False, True, True]), np.array([0, 2, 4, 6]), 4, 10)
    np.testing.assert_array_equal(got, [False] * 4 + [True] * 6)
    assert not step_labels(np.zeros(4, dtype=bool), np.array([0, 2, 4, 6]), 4, 10).any()


def test_segments_cover_every_step_with_exclusive_ends():
    steps = np.array([0, 1, 2, 5, 6])
    got = segments_from_labels(np.array([False, False, False, True, True]), steps)
    assert got == [Segment(0, 5, TRANSIENT), Segment(5, 7, STABLE)]
    assert stable_from(got) == 5
    back = segments_from_labels(np.array([True, False, False, True, False]), steps)
    assert [s.state for s in back] == [STABLE, TRANSIENT, STABLE, TRANSIENT]
    assert stable_from(back) is None
    assert back[0].start == 0 and back[-1].end == 7


def _settling_counts(n_experts: int, tokens: int, steps: int, boundary: int, seed: int,
                     concentration: float | None = None) -> np.ndarray:
    """One layer whose logits random-walk with a volatility that falls linearly to zero at
    ``boundary``; counts are multinomial (or Dirichlet-multinomial: correlated routing)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.5, n_experts)
    envelope = np.clip(1 - np.arange(steps) / boundary, 0, None)[:, None] if boundary else 0.0
    walk = np.cumsum(rng.normal(0, 0.1, (steps, n_experts)) * envelope, axis=0)
    z = base + walk
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    if concentration is not None:
        p = np.stack([rng.dirichlet(concentration * row) for row in p])
    return rng.multinomial(tokens, p)[None]


@pytest.mark.parametrize("n_experts", [16, 128])
@pytest.mark.parametrize("tokens", [100_000, 1_000_000])
def test_boundary_does_not_depend_on_experts_or_tokens(n_experts, tokens):
    counts = _settling_counts(n_experts, tokens, 3000, 1500, seed=n_experts + tokens)
    analysis = analyze_loads(Loads(np.arange(3000), counts, (0,)))
    assert abs(analysis.layers[0].stable_from - 1500) <= 150


def test_correlated_routing_is_not_read_as_fluctuation():
    # tokens of a step share a Dirichlet draw: ~25x the multinomial variance, still stable
    counts = _settling_counts(16, 524_288, 2000, 0, seed=5, concentration=20_000.0)
    layer = analyze_loads(Loads(np.arange(2000), counts, (0,))).layers[0]
    assert layer.segments == [Segment(0, 2000, STABLE)]
    assert layer.noise_scale > 10
    floor = layer.noise_floor[STABLE]
    assert floor.value > 3 * floor.multinomial
    assert floor.value == pytest.approx(floor.empirical, rel=0.1)


def test_per_state_statistics_by_state():
    counts = _settling_counts(16, 524_288, 3000, 1500, seed=9)
    layer = analyze_loads(Loads(np.arange(3000), counts, (0,))).layers[0]
    assert set(layer.noise_floor) == {TRANSIENT, STABLE, "all"}
    assert layer.fluctuation[TRANSIENT] > 5 * layer.fluctuation[STABLE]
    # in the stable state the data move as multinomial sampling says
    floor = layer.noise_floor[STABLE]
    assert floor.empirical == pytest.approx(floor.multinomial, rel=0.05)
    assert floor.value <= floor.multinomial
    assert layer.imbalance[STABLE] >= 1.0


def test_parameters_are_checked():
    loads = Loads(np.arange(50), np.full((1, 50, 4), 10), (0,))
    with pytest.raises(ParameterError, match="fewer than the state window"):
        analyze_loads(loads, window=100)
    with pytest.raises(ParameterError, match="--state-window"):
        analyze_loads(loads, window=1)
    with pytest.raises(ParameterError, match="--sensitivity"):
        analyze_loads(loads, window=10, sensitivity=0)
    with pytest.raises(ParameterError, match="--stable-ratio"):
        analyze_loads(loads, window=10, stable_ratio=1.0)
    zero = np.full((2, 50, 4), 10)
    zero[1, 7] = 0
    with pytest.raises(ParameterError, match="layer 1 routes no tokens at step 7"):
        analyze_loads(Loads(np.arange(50), zero, (0, 1)), window=10)


def test_constant_loads_are_stable_throughout():
    loads = Loads(np.arange(300), np.full((1, 300, 8), 1000), (0,))
    analysis = analyze_loads(loads, window=20)
    assert analysis.layers[0].segments == [Segment(0, 300, STABLE)]
    assert analysis.verdict == "stable from the first step in all layers"


def test_layer_sending_everything_to_one_expert_has_no_noise():
    counts = np.zeros((1, 300, 8), dtype=np.int64)
    counts[0, :, 3] = 1000
    layer = analyze_loads(Loads(np.arange(300), counts, (0,)), window=20).layers[0]
    assert layer.segments == [Segment(0, 300, STABLE)]
    assert layer.noise_floor[STABLE].value == 0.0
    assert layer.imbalance[STABLE] == 8.0
