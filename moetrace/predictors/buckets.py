"""Step buckets: the mean share over b consecutive training steps, and their expansion back.

Buckets are intervals of training steps aligned to the END of the history, so the last bucket
always ends at the origin and holds the newest information; a remainder of fewer than b steps
at the start is dropped. A bucket is never shorter than the trace's sampling interval
(:func:`effective_bucket`), and a bucket that a gap leaves empty repeats its neighbour, so
contiguous, sampled and gapped traces all give a regular series in training steps.
"""

from __future__ import annotations

import numpy as np

from moetrace.trace.shares import Loads


def n_buckets(horizon: int, bucket: int) -> int:
    """Buckets needed to cover ``horizon`` steps (the last one may be partly used)."""
    return -(-horizon // bucket)


def effective_bucket(bucket: int, interval: int) -> int:
    """``bucket`` steps rounded up to whole sampling intervals (so no bucket is empty)."""
    return interval * -(-bucket // interval)


def bucket_means(loads: Loads, bucket: int) -> np.ndarray:
    """(L, n, E) mean shares over buckets of ``bucket`` training steps, the last ending at the
    last step; n = the whole buckets the history's span holds."""
    shares, steps = loads.shares, loads.steps
    n_layers, n_rows, n_experts = shares.shape
    n = loads.span // bucket if n_rows else 0
    if n == 0:
        return shares[:, :0]
    per, regular = bucket // loads.interval, bucket % loads.interval == 0
    if regular and int(steps[-1] - steps[0]) == (n_rows - 1) * loads.interval and \
            n * per <= n_rows:
        tail = shares[:, n_rows - n * per:]  # every row present: equal buckets, one reshape
        return tail.reshape(n_layers, n, per, n_experts).mean(axis=2)
    index = n - 1 - (int(steps[-1]) - steps) // bucket  # ascending, -1.. for dropped rows
    first = int(np.searchsorted(index, 0))
    index = index[first:]
    starts = np.flatnonzero(np.r_[True, np.diff(index) > 0])
    sums = np.add.reduceat(shares[:, first:], starts, axis=1)
    counts = np.diff(np.r_[starts, len(index)])
    out = np.full((n_layers, n, n_experts), np.nan)
    out[:, index[starts]] = sums / counts[None, :, None]
    return _fill_gaps(out)


def _fill_gaps(series: np.ndarray) -> np.ndarray:
    """Empty buckets (NaN) take the value of the bucket before them (the first, after)."""
    present = ~np.isnan(series[0, :, 0])
    if present.all():
        return series
    idx = np.where(present, np.arange(len(present)), -1)
    np.maximum.accumulate(idx, out=idx)
    first = int(np.argmax(present))
    idx[idx < 0] = first
    return series[:, idx]


def expand_buckets(forecast: np.ndarray, bucket: int, horizon: int) -> np.ndarray:
    """(L, K, E) bucket forecasts -> (L, horizon, E) per-step values (each bucket repeated)."""
    return np.repeat(forecast, bucket, axis=1)[:, :horizon]


def normalize_shares(forecast: np.ndarray) -> np.ndarray:
    """Clip to >= 0 and rescale to sum 1 over experts; an all-zero row becomes uniform."""
    clipped = np.clip(np.nan_to_num(forecast, nan=0.0), 0.0, None)
    sums = clipped.sum(axis=-1, keepdims=True)
    uniform = np.full_like(clipped, 1.0 / clipped.shape[-1])
    return np.where(sums > 0, clipped / np.where(sums > 0, sums, 1.0), uniform)
