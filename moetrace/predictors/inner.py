"""Inner rolling-origin evaluation: how a forecasting rule did on the history's own past.

A predictor that chooses between rules (``auto``), tunes one (``drift``) or states how far
its forecast can be trusted (forecast intervals, expected error) asks the same question of
the history it is given: had this rule been used at earlier origins, how wrong would it have
been over the horizon that followed? Everything here sees only the history: the inner
origins are chosen so that every horizon they score ends at or before its last bucket.

Series are bucket means ``(L, n, E)`` (moetrace/predictors/buckets.py). A *rule* maps the
buckets up to and including an inner origin to a forecast of the next ``k`` buckets,
``(L, k, E)``; rules are plain functions, vectorised over layers and experts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moetrace.metrics import error_rate
from moetrace.trace.shares import Loads

#: rule(buckets up to an origin (L, m, E), k) -> forecast of the next k buckets (L, k, E)
Rule = Callable[[np.ndarray, int], np.ndarray]

#: inner origins used at most (more only cost time: the choice is already stable)
ORIGINS = 8


def inner_origins(n: int, k: int, count: int = ORIGINS, min_history: int = 2) -> np.ndarray:
    """Positions (number of buckets seen) of up to ``count`` inner origins whose k-bucket
    horizon ends within ``n`` buckets, newest first, spaced by k // 4 (at least 1): the
    recent past, where the layer behaves most like it will next."""
    last = n - k
    if last < min_history:
        return np.empty(0, dtype=np.int64)
    stride = max(1, k // 4)
    origins = np.arange(last, min_history - 1, -stride)[:count]
    return origins.astype(np.int64)


def valid_origins(origins: np.ndarray, start: np.ndarray | None) -> np.ndarray:
    """(O, L) which inner origins speak for each layer now: for a layer that became stable
    at bucket ``start[l]`` (>= 0), only origins after it (its transient past says nothing
    about its stable present); every origin for a transient layer (start -1)."""
    if start is None:
        return np.ones((len(origins), 1), dtype=bool)
    return (start[None, :] < 0) | (origins[:, None] > start[None, :])


def bucket_errors(rule: Rule, buckets: np.ndarray, origins: np.ndarray,
                  k: int) -> np.ndarray:
    """(O, L) mean over the k horizon buckets of sum_e |forecast - actual| at each inner
    origin: the bucket-level error, which ranks rules by how well they follow the shares
    (per-step sampling noise is the same for every rule and averages out of bucket means)."""
    out = np.empty((len(origins), buckets.shape[0]))
    for i, o in enumerate(origins):
        forecast = rule(buckets[:, :o], k)
        out[i] = error_rate(forecast, buckets[:, o:o + k])
    return out


def mean_residuals(rule: Rule, buckets: np.ndarray, origins: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """(O, L, E) forecast and actual mean share over each inner origin's horizon."""
    forecasts = np.empty((len(origins),) + buckets.shape[::2])
    actuals = np.empty_like(forecasts)
    for i, o in enumerate(origins):
        forecasts[i] = rule(buckets[:, :o], k).mean(axis=1)
        actuals[i] = buckets[:, o:o + k].mean(axis=1)
    return forecasts, actuals


def conformal_interval(forecast: np.ndarray, past_forecast: np.ndarray,
                       past_actual: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per layer and expert, bounds of the mean share over the horizon around ``forecast``
    (L, E) that hold the actual with probability ``level``, split-conformal from the past
    (O, L, E) forecasts and actuals of the same rule.

    The nonconformity score is the residual over the share's binomial scale
    sqrt(f (1 - f)), pooled over the inner origins and the layer's experts (so a layer of
    128 experts and 8 origins has 1,024 scores); the bounds are the lower and upper
    (1 - level) / 2 quantiles of those scores, finite-sample corrected, scaled back per
    expert and clipped to [0, 1]."""
    def scale(f: np.ndarray) -> np.ndarray:
        return np.sqrt(np.clip(f * (1.0 - f), 1e-12, None))

    scores = (past_actual - past_forecast) / scale(past_forecast)  # (O, L, E); NaN: unused
    pooled = scores.transpose(1, 0, 2).reshape(scores.shape[1], -1)  # (L, O*E)
    n = np.maximum(np.isfinite(pooled).sum(axis=1), 1)  # scores per layer
    tail = (1.0 - level) / 2.0
    lo_q = np.clip(np.floor(tail * (n + 1)) / n - 1e-12, 0.0, 1.0)
    hi_q = np.clip(np.ceil((1.0 - tail) * (n + 1)) / n, 0.0, 1.0)
    lo = np.array([np.nanquantile(row, q) if np.isfinite(row).any() else np.nan
                   for row, q in zip(pooled, lo_q)])[:, None]
    hi = np.array([np.nanquantile(row, q) if np.isfinite(row).any() else np.nan
                   for row, q in zip(pooled, hi_q)])[:, None]
    s = scale(forecast)  # a layer with no past error to learn from gets NaN bounds
    return np.clip(forecast + lo * s, 0.0, 1.0), np.clip(forecast + hi * s, 0.0, 1.0)


def row_buckets(loads: Loads, bucket: int, n: int) -> np.ndarray:
    """The bucket of each row of ``loads`` (as moetrace/predictors/buckets.bucket_means
    aligns them: bucket n-1 ends at the last step); rows before bucket 0 get -1."""
    index = n - 1 - (int(loads.steps[-1]) - loads.steps) // bucket
    return np.maximum(index, -1)


def expected_error(rule: Rule, loads: Loads, buckets: np.ndarray, origins: np.ndarray,
                   k: int, bucket: int, valid: np.ndarray | None = None) -> np.ndarray:
    """(L,) the mean per-step error rate (the report's headline metric: every step's shares,
    sampling noise included) the rule had at the inner origins valid for each layer."""
    index = row_buckets(loads, bucket, buckets.shape[1])
    errors = np.empty((len(origins), buckets.shape[0]))
    for i, o in enumerate(origins):
        rows = np.flatnonzero((index >= o) & (index < o + k))
        forecast = rule(buckets[:, :o], k)[:, index[rows] - o]  # (L, rows, E)
        errors[i] = error_rate(forecast, loads.shares[:, rows])
    return masked_mean(errors, valid)


def masked_mean(values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """(O, L) -> (L,) mean over the valid origins (NaN for a layer with none)."""
    if valid is None:
        return values.mean(axis=0)
    valid = np.broadcast_to(valid, values.shape)
    count = valid.sum(axis=0)
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, np.where(valid, values, 0.0).sum(axis=0) /
                        np.maximum(count, 1), np.nan)
