"""Choosing the ARIMA order from the data, as the paper did: stationarity tests for d, an
information criterion for (p, q).

Per layer, d is the number of differences after which a series passes both stationarity tests
(ADF rejects a unit root and KPSS does not reject stationarity, at 5%), by majority over a few
probe experts (the hottest, the median and the coldest by mean share); (p, q) minimises the
summed BIC of two-step Hannan-Rissanen fits of those probes over 0 <= p, q <= 5. Probing three
experts per layer keeps the cost bounded (about 1,300 quick fits for 12 layers) instead of 36
grid fits for each of 1,536 series. No seasonal terms: load shares show no seasonality to test for.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from itertools import product

import numpy as np

from moetrace.predictors.arima_fit import estimate_many
from moetrace.predictors.arma import css_residuals, difference

MAX_P = MAX_Q = 5
MAX_D = 1  # d = 2 extrapolates the local slope of noisy shares: far off at 1-2k steps
LEVEL = 0.05
#: Residuals this many buckets into the window on count towards the criterion (start-up skipped).
BURN_IN = 10


def is_stationary(x: np.ndarray) -> bool:
    """ADF rejects a unit root and KPSS does not reject level stationarity (both at 5%)."""
    from statsmodels.tsa.stattools import adfuller, kpss

    if np.ptp(x) <= 1e-12 * max(1.0, np.abs(x).max()):
        return True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KPSS warns when its p-value is outside its table
        adf_p = adfuller(x, autolag="AIC")[1]
        kpss_p = kpss(x, regression="c", nlags="auto")[1]
    return adf_p < LEVEL and kpss_p >= LEVEL


def choose_d(levels: np.ndarray) -> int:
    """Differences needed for stationarity, by majority over the rows of ``levels`` (m, n)."""
    needed = []
    for x in levels:
        d = 0
        while d < MAX_D and not is_stationary(np.diff(x, n=d) if d else x):
            d += 1
        needed.append(d)
    return int(np.median(needed).round())


def probe_experts(levels: np.ndarray) -> list[int]:
    """Hottest, median and coldest expert of a layer, (E, n) levels, by mean share."""
    order = np.argsort(-levels.mean(axis=1), kind="stable")
    return list(dict.fromkeys([int(order[0]), int(order[len(order) // 2]), int(order[-1])]))


def bic(w: np.ndarray, phi: np.ndarray, theta: np.ndarray) -> float:
    """Summed BIC of zero-mean series w (m, n) from their CSS residuals."""
    e = css_residuals(w, phi, theta)[:, BURN_IN:]
    n = e.shape[1]
    sigma2 = np.maximum((e ** 2).mean(axis=1), 1e-300)
    k = phi.shape[1] + theta.shape[1] + 1
    return float((n * np.log(sigma2) + k * np.log(n)).sum())


def select_orders(buckets: np.ndarray, progress: Callable[[int, int], None] | None = None
                  ) -> list[tuple[int, int, int]]:
    """One (p, d, q) per layer of (L, n, E) bucket shares."""
    grid = list(product(range(MAX_P + 1), range(MAX_Q + 1)))
    probes, ds = [], []
    for layer in buckets:
        levels = layer.T[probe_experts(layer.T)]
        d = choose_d(levels)
        w, _ = difference(levels, d)
        probes.append(w - w.mean(axis=1, keepdims=True))
        ds.append(d)
    jobs = [(i, pq, row) for i, w in enumerate(probes) for pq in grid for row in w]
    fitted = estimate_many([row for _, _, row in jobs], [pq for _, pq, _ in jobs], progress,
                           bias_correction=False)
    scores: dict[tuple[int, tuple[int, int]], float] = {}
    at = 0
    for i, w in enumerate(probes):
        for pq in grid:
            part = fitted[at:at + len(w)]
            at += len(w)
            phi = np.array([f[0] for f in part]).reshape(len(w), pq[0])
            theta = np.array([f[1] for f in part]).reshape(len(w), pq[1])
            scores[i, pq] = bic(w, phi, theta)
    chosen = []
    for i, d in enumerate(ds):
        p, q = min(grid, key=lambda pq: (scores[i, pq], sum(pq)))
        chosen.append((p, d, q))
    return chosen
