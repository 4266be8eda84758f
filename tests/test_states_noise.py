"""Noise floor: multinomial formula by hand, top-k, the empirical estimate and the shown value."""

from __future__ import annotations

import numpy as np
import pytest

from moetrace.states.noise import (
    NoiseFloor,
    empirical_floor,
    multinomial_floor,
    multinomial_share_var,
    noise_scale,
    successive_half_sq_diff,
)


def test_multinomial_floor_350m_by_hand():
    # 128 equal experts, 524,288 tokens, top-1:
    # 128 * sqrt(2/pi) * sqrt((1/128)(127/128) / 524288) = 0.012418...
    shares = np.full((1, 128), 1 / 128)
    got = multinomial_floor(shares, np.array([524_288]), top_k=1)[0]
    hand = 128 * 0.7978845608 * np.sqrt((1 / 128) * (127 / 128) / 524_288)
    assert got == pytest.approx(hand, rel=1e-9)
    assert got == pytest.approx(0.012418, abs=1e-6)


def test_top_k_counts_tokens_not_slots():
    # top-2 over 4 experts, 1000 tokens = 2000 slots, shares 1/4: each expert is picked by a
    # token with probability q = 1/2; share variance q(1-q) / (k^2 n) = 0.25 / 4000
    got = multinomial_share_var(np.full((1, 4), 0.25), np.array([2000]), top_k=2)
    np.testing.assert_allclose(got, 0.25 / 4000)
    # less than if the 2000 slots were independent: p(1-p)/2000 = 0.1875/2000
    assert got[0, 0] < 0.1875 / 2000


def test_multinomial_floor_matches_monte_carlo():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(16, 3.0))
    counts = rng.multinomial(100_000, p, size=4000)
    observed = np.abs(counts / 100_000 - p).sum(axis=1).mean()
    predicted = multinomial_floor(p[None, :], np.array([100_000]))[0]
    assert observed == pytest.approx(predicted, rel=0.03)


def test_top_k_floor_matches_monte_carlo():
    # each token picks k=2 distinct experts: Gumbel top-2 over log-preferences
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 0.3, 8)
    tokens, k, steps = 1000, 2, 1500
    picks = np.argsort(-(logits + rng.gumbel(size=(steps, tokens, 8))), axis=2)[..., :k]
    counts = np.stack([np.bincount(s.ravel(), minlength=8) for s in picks])
    shares = counts / (tokens * k)
    p = shares.mean(axis=0)
    observed = np.abs(shares - p).sum(axis=1).mean()
    predicted = multinomial_floor(p[None, :], np.array([tokens * k]), top_k=k)[0]
    assert observed == pytest.approx(predicted, rel=0.04)


def test_empirical_floor_recovers_multinomial_noise_around_a_fixed_share():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.full(32, 5.0))
    shares = rng.multinomial(200_000, p, size=3000) / 200_000
    pairs = np.ones(2999, dtype=bool)
    got = empirical_floor(successive_half_sq_diff(shares), pairs)
    assert got == pytest.approx(multinomial_floor(p[None], np.array([200_000]))[0], rel=0.03)


def test_empirical_floor_uses_only_selected_pairs():
    half_sq = np.array([[0.5], [2.0], [8.0]])
    # only the middle pair: sqrt(2/pi) * sqrt(2)
    got = empirical_floor(half_sq, np.array([False, True, False]))
    assert got == pytest.approx(np.sqrt(2 / np.pi) * np.sqrt(2.0))
    assert np.isnan(empirical_floor(half_sq, np.zeros(3, dtype=bool)))


def test_successive_half_sq_diff_by_hand():
    x = np.array([[0.1, 0.9], [0.3, 0.7], [0.3, 0.7]])
    np.testing.assert_allclose(successive_half_sq_diff(x), [[0.02, 0.02], [0.0, 0.0]])


def test_value_is_multinomial_scaled_and_capped_by_empirical():
    assert NoiseFloor(0.0125, 0.013).value == 0.0125
    assert NoiseFloor(0.0125, 0.010).value == 0.010  # data move even less than sampling
    assert NoiseFloor(0.01, 0.5, scale=4.0).value == pytest.approx(0.02)
    assert NoiseFloor(0.01, float("nan"), scale=9.0).value == pytest.approx(0.03)


def test_noise_scale_from_white_windows_bounded_by_quietest():
    sampling = np.full(10, 1e-8)
    # white windows (variance ~ steady) with steady 4x the sampling variance
    assert noise_scale(np.full(10, 4e-8), np.full(10, 4e-8), sampling, 2.0) == pytest.approx(4.0)
    # nothing white: independent routing is assumed
    assert noise_scale(np.full(10, 1e-6), np.full(10, 4e-8), sampling, 2.0) == 1.0
    # never below 1
    assert noise_scale(np.full(10, 5e-9), np.full(10, 5e-9), sampling, 2.0) == 1.0
    # white but jittery windows cannot claim more noise than the quietest windows show
    var = np.array([1e-4] * 5 + [1e-6] * 95)
    steady = np.array([1e-4] * 5 + [2e-8] * 95)
    assert noise_scale(var, steady, np.full(100, 1e-8), 2.0) == pytest.approx(2.0)


def test_exact_binomial_absolute_deviation_by_hand():
    from moetrace.states.noise import binomial_abs_deviation

    assert binomial_abs_deviation(1, 0.5) == pytest.approx(0.5)  # |X - 0.5| = 0.5 always
    assert binomial_abs_deviation(2, 0.5) == pytest.approx(0.5)  # 1, 0, 1 w.p. 1/4, 1/2, 1/4
    assert binomial_abs_deviation(4, 0.25) == pytest.approx(  # by enumeration
        sum(abs(x - 1) * p for x, p in enumerate([81 / 256, 108 / 256, 54 / 256,
                                                    12 / 256, 1 / 256])))
    assert binomial_abs_deviation(10, 0.0) == 0.0 and binomial_abs_deviation(10, 1.0) == 0.0


@pytest.mark.parametrize("tokens, top_k", [(1, 2), (4, 1), (4, 2), (512, 1), (512, 2)])
def test_floors_are_what_a_perfect_constant_forecast_scores(tokens, top_k):
    """A trace whose underlying shares never move: the floor analyze reports must match the
    error of forecasting exactly those shares, simulated, at any number of tokens per step."""
    from moetrace.states import analyze_loads
    from moetrace.trace.shares import Loads

    rng = np.random.default_rng(tokens * 10 + top_k)
    n_experts, steps = 8, 4000
    logits = rng.normal(0, 0.5, n_experts)
    picks = np.argsort(-(logits + rng.gumbel(size=(steps, tokens, n_experts))), axis=2)
    picks = picks[..., :top_k].reshape(steps, -1)
    counts = np.stack([np.bincount(s, minlength=n_experts) for s in picks])[None]
    loads = Loads(np.arange(steps), counts, (0,))
    # the underlying shares, estimated from a very long independent run of the same routing
    many = np.argsort(-(logits + rng.gumbel(size=(200_000, n_experts))), axis=1)[:, :top_k]
    p = np.bincount(many.ravel(), minlength=n_experts) / many.size
    perfect = np.abs(loads.shares[0] - p).sum(axis=1).mean()
    analysis = analyze_loads(loads, top_k=top_k, window=200)
    floor = analysis.layers[0].noise_floor["all"]
    assert floor.multinomial == pytest.approx(perfect, rel=0.08), (floor, perfect)
    assert floor.scale < 10  # no runaway noise scale from 0/1 shares
    assert floor.reliable == (200 * tokens * top_k / n_experts >= 100)
