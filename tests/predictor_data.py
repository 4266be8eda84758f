"""Synthetic Loads with known shape for predictor tests (constant, trend, periodic, random)."""

from __future__ import annotations

import numpy as np

from moetrace.trace.shares import Loads

TOKENS = 1_000_000


def loads_from_shares(shares: np.ndarray, steps: np.ndarray | None = None) -> Loads:
    """Loads whose counts are ``shares * TOKENS`` rounded (largest share takes the remainder)."""
    counts = np.floor(np.asarray(shares) * TOKENS).astype(np.int64)
    top = counts.argmax(axis=-1)[..., None]
    np.put_along_axis(counts, top, np.take_along_axis(counts, top, -1)
                      + TOKENS - counts.sum(-1, keepdims=True), -1)
    steps = np.arange(counts.shape[1]) if steps is None else np.asarray(steps, dtype=np.int64)
    return Loads(steps.astype(np.int64), counts, tuple(range(counts.shape[0])))


def constant(n_layers: int = 2, n_steps: int = 400, n_experts: int = 4) -> Loads:
    """Every step routes the same counts; layer l's shares are proportional to 1..E (+l)."""
    base = np.arange(1, n_experts + 1, dtype=np.float64)[None, :] + np.arange(n_layers)[:, None]
    counts = np.round(base / base.sum(1, keepdims=True) * TOKENS).astype(np.int64)
    counts = np.repeat(counts[:, None, :], n_steps, axis=1)
    return Loads(np.arange(n_steps, dtype=np.int64), counts, tuple(range(n_layers)))


def random_walk(n_layers: int = 2, n_steps: int = 600, n_experts: int = 6,
                seed: int = 0) -> Loads:
    """Shares drifting as a softmax of random walks: a generic, noisy trace."""
    rng = np.random.default_rng(seed)
    logits = np.cumsum(rng.normal(0, 0.05, (n_layers, n_steps, n_experts)), axis=1)
    shares = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return loads_from_shares(shares)


def periodic(n_layers: int = 1, n_steps: int = 2000, n_experts: int = 4,
             period: int = 40) -> Loads:
    """Shares oscillating with a fixed period, each expert phase-shifted: strongly periodic."""
    t = np.arange(n_steps)[None, :, None]
    phase = 2 * np.pi * np.arange(n_experts)[None, None, :] / n_experts
    logits = 0.8 * np.sin(2 * np.pi * t / period + phase) + 0.1 * np.arange(n_layers)[:, None, None]
    shares = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return loads_from_shares(np.broadcast_to(shares, (n_layers, n_steps, n_experts)))
