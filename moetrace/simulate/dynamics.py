"""Per-step expert loads: logits from persistent preferences, slow drift and a decaying transient.

For layer l, expert e and step t the router's preference is the logit

    z = base[e] + drift(t)[e] + v_l(t) * (swing(t)[e] * w_s + jolt(t)[e] * w_j + jitter[t, e] * w_i)

``base`` is a fixed log-normal preference (hot and cold experts), ``drift`` a slow mean-reverting
random walk (the stable state's temporal locality), ``v_l`` the layer's transient volatility
envelope (:func:`moetrace.simulate.truth.volatility`), ``swing`` and ``jolt`` smooth random
paths through random knots (jolt knots are sometimes an expert's collapse) and ``jitter`` white
noise. Shares are softmax(z) and the step's counts one multinomial draw of all its top-k slots.

Random numbers come from streams keyed by (seed, purpose, layer or step block), so a trace is
the same for a seed however it is chunked.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from moetrace.errors import ParameterError
from moetrace.simulate.config import SimConfig
from moetrace.simulate.truth import Truth, ground_truth, volatility

#: Steps per random stream of the per-step draws; chunks are whole numbers of these.
STREAM_STEPS = 500
_LAYER_STREAM, _STEP_STREAM, _GROUP_STREAM = 0, 1, 2


class _LayerPaths:
    """One layer's random knots, drawn once for the whole run (small: steps / knot spacing)."""

    def __init__(self, config: SimConfig, seed: int, layer: int):
        rng = np.random.default_rng([seed, _LAYER_STREAM, layer])
        e = config.n_experts
        self.base = rng.normal(0.0, config.base_spread, e)
        if config.n_groups > 1 and config.group_spread > 0:  # own stream: other presets unchanged
            groups = np.random.default_rng([seed, _GROUP_STREAM, layer])
            shared = groups.normal(0.0, config.group_spread, config.n_groups)
            self.base = self.base + np.repeat(shared, e // config.n_groups)
        self.drift = _mean_reverting(rng, _n_knots(config.steps, config.drift_knot), e,
                                     config.drift, config.drift_knot / config.drift_memory)
        self.swing = rng.normal(0.0, 1.0, (_n_knots(config.steps, config.swing_knot), e))
        jolt = rng.normal(0.0, 1.0, (_n_knots(config.steps, config.jolt_knot), e))
        collapse = rng.random(jolt.shape) < config.collapse_rate
        self.jolt = np.where(collapse, -config.collapse_depth, jolt)

    def stable_logits(self, config: SimConfig, t: np.ndarray) -> np.ndarray:
        """Base preference plus slow drift at steps ``t``: (T, E)."""
        return self.base + _smooth(self.drift, config.drift_knot, t)

    def transient_shape(self, config: SimConfig, t: np.ndarray) -> np.ndarray:
        """The transient's slow swings and fast jolts at steps ``t``, before the envelope."""
        return (config.swing_weight * _smooth(self.swing, config.swing_knot, t)
                + config.jolt_weight * _smooth(self.jolt, config.jolt_knot, t))


def _n_knots(steps: int, spacing: int) -> int:
    return (steps - 1) // spacing + 2


def _mean_reverting(rng: np.random.Generator, n: int, e: int, sd: float,
                    knot_over_memory: float) -> np.ndarray:
    """An AR(1) path over knots with stationary sd ``sd`` (loops over knots, not steps)."""
    rho = np.exp(-knot_over_memory)
    shocks = rng.normal(0.0, sd * np.sqrt(1.0 - rho * rho), (n, e))
    out = np.empty((n, e))
    out[0] = rng.normal(0.0, sd, e)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + shocks[i]
    return out


def _smooth(knots: np.ndarray, spacing: int, t: np.ndarray) -> np.ndarray:
    """Cosine interpolation between knots placed every ``spacing`` steps: (len(t), E)."""
    pos = t / spacing
    i = pos.astype(np.int64)
    w = (0.5 - 0.5 * np.cos(np.pi * (pos - i)))[:, None]
    return knots[i] * (1.0 - w) + knots[i + 1] * w


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def iter_counts(config: SimConfig, seed: int = 0,
                chunk_steps: int = STREAM_STEPS) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(first_step, counts)`` chunks in step order; counts is int64 (L, chunk, E).

    ``chunk_steps`` must be a multiple of :data:`STREAM_STEPS`; the counts do not depend on it.
    """
    if seed < 0:
        raise ParameterError(f"--seed must be >= 0, got {seed}")
    if chunk_steps <= 0 or chunk_steps % STREAM_STEPS:
        raise ParameterError(f"chunk_steps must be a positive multiple of {STREAM_STEPS}, "
                             f"got {chunk_steps}")
    paths = [_LayerPaths(config, seed, layer) for layer in range(config.n_layers)]
    for first in range(0, config.steps, chunk_steps):
        last = min(first + chunk_steps, config.steps)
        yield first, np.concatenate(
            [_stream_block(config, seed, paths, b, min(b + STREAM_STEPS, last))
             for b in range(first, last, STREAM_STEPS)], axis=1)


def _stream_block(config: SimConfig, seed: int, paths: list[_LayerPaths], start: int,
                  stop: int) -> np.ndarray:
    """Counts for steps start..stop-1 (inside one random stream): (L, stop - start, E)."""
    rng = np.random.default_rng([seed, _STEP_STREAM, start // STREAM_STEPS])
    t = np.arange(start, stop)
    envelope = volatility(config, start, stop)
    shares = np.empty((config.n_layers, len(t), config.n_experts))
    for layer, path in enumerate(paths):
        z = path.stable_logits(config, t)
        if envelope[layer].any():
            jitter = rng.normal(0.0, config.jitter_weight, z.shape)
            z += envelope[layer][:, None] * (path.transient_shape(config, t) + jitter)
        shares[layer] = _softmax(z)
    shares = with_hot_sets(config, shares, t)
    counts = rng.multinomial(config.slots_per_step, shares.reshape(-1, config.n_experts))
    return counts.reshape(shares.shape)


def hot_share(config: SimConfig, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(``[T]`` the share of each step's tokens sent to a hot set, ``[T, E]`` bool that hot
    set) of the rotating hotspot and the bursts (docs/simulation.md)."""
    e, width = config.n_experts, config.hot_count()
    share = np.zeros(len(t))
    first = (t // config.hotspot_period) * width if config.hotspot_share > 0 else 0 * t
    if config.hotspot_share > 0:
        share[:] = config.hotspot_share
    if config.burst_every:
        bursting = t % config.burst_every >= config.burst_every - config.burst_length
        share = np.where(bursting, np.maximum(share, config.burst_share), share)
        first = np.where(bursting & (config.hotspot_share == 0), 0, first)
    hot = (np.arange(e)[None, :] - first[:, None]) % e < width
    return share, hot


def with_hot_sets(config: SimConfig, shares: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``shares [L, T, E]`` with each step's hot-set share moved evenly onto its hot set."""
    if config.hotspot_share == 0 and config.burst_every == 0:
        return shares
    share, hot = hot_share(config, t)
    return ((1 - share)[None, :, None] * shares
            + (share[:, None] * hot / config.hot_count())[None])


def simulate_counts(config: SimConfig, seed: int = 0) -> tuple[np.ndarray, Truth]:
    """The whole run in memory: counts int64 (L, steps, E) and its ground truth."""
    counts = np.concatenate([c for _, c in iter_counts(config, seed)], axis=1)
    return counts, ground_truth(config)
