"""Forecast error metrics over load shares: pure numpy functions, defined in docs/metrics.md.

Every function takes forecast shares ``f`` and actual shares ``a`` of the same shape
``(..., H, E)`` (leading axes are typically layers or origins, then steps, then experts) and
returns one value per leading index, shape ``(...)``. Shares are fractions (0.013 for 1.3%).
"""

from __future__ import annotations

import numpy as np


def nanmean_rows(values: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of the values that are not NaN; NaN, without a warning, for a row with
    none (numpy's nanmean warns: a user's terminal is no place for it)."""
    present = np.sum(~np.isnan(values), axis=1)
    return np.where(present > 0, np.nansum(values, axis=1) / np.maximum(present, 1), np.nan)


def step_error(f: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Per-step error rate: sum over experts of |f - a|, shape ``(..., H)``."""
    return np.abs(np.asarray(f) - np.asarray(a)).sum(axis=-1)


def error_rate(f: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Mean over the H steps of sum over experts of |f - a| (twice the total variation distance)."""
    return step_error(f, a).mean(axis=-1)


def mean_error_ratio(f: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over steps and experts of |f - a| / a, skipping a = 0; also the count skipped.

    Returns ``(ratio, zero_actuals)``; ``ratio`` is NaN where every actual share is zero.
    """
    a = np.asarray(a, dtype=np.float64)
    return _ratio_of(np.abs(np.asarray(f) - a), a)


def _ratio_of(diff: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    present = a > 0
    total = np.divide(diff, a, out=np.zeros_like(a), where=present).sum(axis=(-2, -1))
    n = present.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return mean, a.shape[-2] * a.shape[-1] - n


def window_error(f: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Sum over experts of |mean f - mean a|, the means taken over the H steps.

    The error of the average load over the window, which is what a placement held for the
    whole window pays for.
    """
    return np.abs(np.asarray(f).mean(axis=-2) - np.asarray(a).mean(axis=-2)).sum(axis=-1)


def imbalance_ratio(shares: np.ndarray) -> np.ndarray:
    """Max/mean load of each step: E * max share / sum of shares, shape ``(..., H)``."""
    shares = np.asarray(shares, dtype=np.float64)
    return shares.shape[-1] * shares.max(axis=-1) / shares.sum(axis=-1)


def imbalance_error(f: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Mean over steps of the relative error of the forecast max/mean ratio: |r_f - r_a| / r_a."""
    r_f, r_a = imbalance_ratio(f), imbalance_ratio(a)
    return (np.abs(r_f - r_a) / r_a).mean(axis=-1)


def constant_bound(a: np.ndarray) -> np.ndarray:
    """The lowest error rate any forecast held constant over the steps can score against the
    actual shares ``a`` (..., H, E): the median of each expert's shares over the H steps
    minimises that expert's summed absolute error of a constant, so the sum over experts of
    those minima, over H, is a lower bound on the error rate of every constant forecast, on the
    simplex or not (proof: docs/metrics.md). Shape (...)."""
    # sum over s of |a_s - median| is the sum of the k largest minus the k smallest values,
    # k = H // 2 (an odd H's middle value is the median itself): one partition per expert
    n, k = a.shape[-2], a.shape[-2] // 2
    part = np.partition(np.ascontiguousarray(np.swapaxes(np.asarray(a, dtype=np.float64),
                                                         -1, -2)), k, axis=-1)
    return (part[..., n - k:].sum(axis=(-2, -1)) - part[..., :k].sum(axis=(-2, -1))) / n


def held_steps(f: np.ndarray) -> np.ndarray:
    """Whether each step of the forecast ``f`` (..., H, E) equals its first exactly, shape
    (..., H); a forecast whose steps all do is held constant. Exact: a held forecast repeats
    its values, and a forecast that moves by rounding only is not claimed constant (the bound
    then makes no claim about it)."""
    f = np.asarray(f)
    return (f == f[..., :1, :]).all(axis=-1)


def is_constant(f: np.ndarray) -> np.ndarray:
    """Whether the forecast ``f`` (..., H, E) is held constant over its H steps: the
    forecasts :func:`constant_bound` binds. Shape (...)."""
    return held_steps(f).all(axis=-1)


#: Metric names in the order reports show them.
METRICS = ("error_rate", "mean_error_ratio", "window_error", "imbalance_error")


def score(f: np.ndarray, a: np.ndarray) -> dict[str, np.ndarray]:
    """All metrics at once (|f - a| taken once), plus ``zero_actuals`` (a = 0 entries skipped)."""
    f, a = np.asarray(f, dtype=np.float64), np.asarray(a, dtype=np.float64)
    diff = np.abs(f - a)
    ratio, zeros = _ratio_of(diff, a)
    return {
        "error_rate": diff.sum(axis=-1).mean(axis=-1),
        "mean_error_ratio": ratio,
        "window_error": window_error(f, a),
        "imbalance_error": imbalance_error(f, a),
        "zero_actuals": zeros,
    }


def lookahead_forecast(shares: np.ndarray, lo: int, hi: int, radius: int) -> np.ndarray:
    """The look-ahead reference's forecast of rows ``lo .. hi-1`` of (..., T, E) ``shares``:
    at each row the mean of the actual shares within ``radius`` rows on either side, the row
    itself left out (a leave-one-out centred moving average). It sees the future but is no
    bound: a longer plain average of the past beats it where the shares hold still (its
    window is short, so it keeps more sampling noise). A reference for the step-to-step
    movement of the shares, with their real, overdispersed noise (docs/metrics.md). Shape
    (..., hi - lo, E)."""
    n = shares.shape[-2]
    a, b = max(0, lo - radius), min(n, hi + radius)
    part = np.asarray(shares[..., a:b, :], dtype=np.float64)
    cum = np.concatenate([np.zeros_like(part[..., :1, :]), np.cumsum(part, axis=-2)], axis=-2)
    rows = np.arange(lo, hi)
    start = np.maximum(rows - radius, 0) - a
    stop = np.minimum(rows + radius + 1, n) - a
    total = cum[..., stop, :] - cum[..., start, :] - part[..., rows - a, :]
    count = (stop - start - 1)[:, None]
    return total / np.maximum(count, 1)
