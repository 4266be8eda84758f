"""Choosing the ARIMA order from the data: d = 1, an information criterion for (p, q).

The paper chose d with stationarity tests. On share series they often pass at d = 0 (shares
are bounded and, in the stable state, revert slowly), but an ARIMA(p, 0, q) then reverts to
the mean of its whole fitting window, which is the wrong level at 1,000-2,000 steps whenever
the window holds part of the transient or the slow drift of the stable state: with ADF/KPSS
choosing d, the stable-state error of the 125M sample at 1,000 steps was 3.0% against 1.0%
with d = 1 (docs/predictors.md). So automatic orders difference once: the forecast starts
from the current level (no drift unless a t-test supports one, see arima_drift.py) and the
ARMA part models the bucket-to-bucket dynamics. d = 2 extrapolates the local slope of noisy
shares and is never chosen. Per layer, (p, q) minimises the summed BIC of two-step
Hannan-Rissanen fits of a few probe experts (the hottest, the median and the coldest by
mean share) over 0 <= p, q <= 5: about 1,300 quick fits for 12 layers instead of 36 grid fits
for each of 1,536 series. No seasonal terms: load shares show no seasonality to test for.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import numpy as np

from moetrace.predictors.arima_drift import supported_drift
from moetrace.predictors.arima_fit import estimate_many
from moetrace.predictors.arma import css_residuals, difference

MAX_P = MAX_Q = 5
D = 1
#: Residuals this many buckets into the window on count towards the criterion (start-up skipped).
BURN_IN = 10


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
    probes = []
    for layer in buckets:
        w, _ = difference(layer.T[probe_experts(layer.T)], D)
        probes.append(w - supported_drift(w)[:, None])
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
    for i in range(len(probes)):
        p, q = min(grid, key=lambda pq: (scores[i, pq], sum(pq)))
        chosen.append((p, D, q))
    return chosen
