"""Step buckets: the mean share over b consecutive steps, and their expansion back to steps.

Buckets are aligned to the END of the history, so the last bucket always ends at the origin
and holds the newest information; a remainder of fewer than b steps at the start is dropped.
History positions are treated as consecutive steps even where step numbers have gaps.
"""

from __future__ import annotations

import numpy as np


def n_buckets(horizon: int, bucket: int) -> int:
    """Buckets needed to cover ``horizon`` steps (the last one may be partly used)."""
    return -(-horizon // bucket)


def bucket_means(shares: np.ndarray, bucket: int) -> np.ndarray:
    """(L, T, E) shares -> (L, T // bucket, E) bucket means, the last bucket ending at T."""
    n_layers, n_steps, n_experts = shares.shape
    n = n_steps // bucket
    tail = shares[:, n_steps - n * bucket:]
    return tail.reshape(n_layers, n, bucket, n_experts).mean(axis=2)


def expand_buckets(forecast: np.ndarray, bucket: int, horizon: int) -> np.ndarray:
    """(L, K, E) bucket forecasts -> (L, horizon, E) per-step values (each bucket repeated)."""
    return np.repeat(forecast, bucket, axis=1)[:, :horizon]


def normalize_shares(forecast: np.ndarray) -> np.ndarray:
    """Clip to >= 0 and rescale to sum 1 over experts; an all-zero row becomes uniform."""
    clipped = np.clip(np.nan_to_num(forecast, nan=0.0), 0.0, None)
    sums = clipped.sum(axis=-1, keepdims=True)
    uniform = np.full_like(clipped, 1.0 / clipped.shape[-1])
    return np.where(sums > 0, clipped / np.where(sums > 0, sums, 1.0), uniform)
