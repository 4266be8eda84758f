"""Segmentation against the simulator's ground truth: both presets, several seeds, scenarios.

Targets from the analyze issue: the detected boundary within 5% of the trace length of the
truth for at least 90% of layers, and at least 95% of step labels right.
"""

from __future__ import annotations

import numpy as np
import pytest

from moetrace.simulate import make_config, simulate_counts
from moetrace.states import analyze_loads
from moetrace.trace import Loads

SEEDS = [0, 1, 2, 3]


def _analyze(preset: str, steps: int, seed: int, window: int = 100, **scenario):
    config = make_config(preset, steps=steps, **scenario)
    counts, truth = simulate_counts(config, seed)
    loads = Loads(np.arange(steps), counts, tuple(range(config.n_layers)))
    return analyze_loads(loads, window=window, top_k=config.top_k), truth


def _score(analysis, truth, steps: int) -> tuple[float, float]:
    """(share of layers with the boundary within 5% of the length, share of labels right)."""
    near = [b is not None and s is not None and abs(s - b) <= 0.05 * steps
            for s, b in zip((la.stable_from for la in analysis.layers), truth.boundaries)]
    return float(np.mean(near)), float((analysis.stable == truth.stable_mask(steps)).mean())


@pytest.mark.parametrize("preset,steps,layers", [("gpt3-125m", 3000, None),
                                                  ("gpt3-350m", 2000, None)])
@pytest.mark.parametrize("seed", SEEDS)
def test_boundaries_and_labels_match_the_truth(preset, steps, layers, seed):
    analysis, truth = _analyze(preset, steps, seed, layers=layers)
    near, right = _score(analysis, truth, steps)
    assert near >= 0.9, [(la.stable_from, b) for la, b in zip(analysis.layers, truth.boundaries)]
    assert right >= 0.95


@pytest.mark.parametrize("window", [10, 200])
def test_other_windows_meet_the_targets(window):
    for seed in SEEDS[:2]:
        analysis, truth = _analyze("gpt3-125m", 4000, seed, window=window)
        near, right = _score(analysis, truth, 4000)
        assert near >= 0.9 and right >= 0.95


def test_top_2_routing_meets_the_targets():
    analysis, truth = _analyze("gpt3-125m", 3000, 5, top_k=2)
    near, right = _score(analysis, truth, 3000)
    assert near >= 0.9 and right >= 0.95
    assert all(la.noise_scale < 1.5 for la in analysis.layers)


def test_stable_from_the_start_says_so():
    analysis, _ = _analyze("gpt3-125m", 2000, 1, transient=0)
    assert all(la.stable_from == 0 and len(la.segments) == 1 for la in analysis.layers)
    assert analysis.model_stable_from == 0
    assert analysis.verdict == "stable from the first step in all layers"


@pytest.mark.parametrize("preset", ["gpt3-125m", "gpt3-350m"])
def test_pure_transient_says_so(preset):
    analysis, _ = _analyze(preset, 1500, 2, transient=5000, layers=3)
    assert all(la.stable_from is None and len(la.segments) == 1 for la in analysis.layers)
    assert not analysis.stable.any()
    assert analysis.model_stable_from is None
    assert analysis.verdict == "layers 0, 1 and 2 are still fluctuating at the last step"


def test_reentry_gives_four_segments_near_the_truth():
    steps = 5000
    analysis, truth = _analyze("gpt3-125m", steps, 3, transient=1500, reentries=[(3000, 800)])
    _, right = _score(analysis, truth, steps)
    assert right >= 0.95
    for la, true_segments in zip(analysis.layers, truth.segments):
        assert [s.state for s in la.segments] == [s.state for s in true_segments]
        for got, want in zip(la.segments, true_segments):
            assert abs(got.start - want.start) <= 0.05 * steps
    assert analysis.model_stable_from == max(la.stable_from for la in analysis.layers)


def test_model_is_stable_where_every_layer_is():
    analysis, _ = _analyze("gpt3-125m", 3000, 0)
    np.testing.assert_array_equal(
        analysis.stable.all(axis=0),
        np.concatenate([np.full(analysis.model_stable_from, False),
                        np.full(3000 - analysis.model_stable_from, True)]))
    assert analysis.model_stable_from == max(la.stable_from for la in analysis.layers)
    assert analysis.verdict == f"stable from step {analysis.model_stable_from} in all layers"
