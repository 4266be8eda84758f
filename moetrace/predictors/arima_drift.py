"""Whether a differenced share series has a drift worth extrapolating: a HAC t-test.

With d = 1 a constant in the model is a drift, added to every forecast step, so over a
2,000-step horizon (100 buckets) even a small, spurious drift moves a share far. The mean
difference of a window is (last - first) / (n - 1): mostly what the share did in the oldest
part of the window (often the transient), not a trend that continues. The drift is kept only
where it is large against its standard error, estimated with the Newey-West long-run
variance (Bartlett weights) so that autocorrelated differences (a random walk plus sampling
noise, an ARMA process) do not make a chance excursion look significant.
"""

from __future__ import annotations

import numpy as np

#: |t| above which a drift is kept: a two-sided 0.1% level. Applied to each of up to 1,536
#: series, a 5% level would give dozens of spurious drifts per origin.
CRITICAL_T = 3.29


def newey_west_bandwidth(n: int) -> int:
    """The usual automatic lag truncation, floor(4 (n/100)^(2/9))."""
    return int(4 * (n / 100) ** (2 / 9))


def drift_t(w: np.ndarray) -> np.ndarray:
    """(S, n) differences -> (S,) t statistic of their mean with a Newey-West standard error
    (inf where the differences are exactly constant and non-zero, 0 where all are zero)."""
    n = w.shape[1]
    mean = w.mean(axis=1)
    x = w - mean[:, None]
    lrv = (x * x).mean(axis=1)
    m = min(newey_west_bandwidth(n), n - 1)
    for j in range(1, m + 1):
        lrv += 2 * (1 - j / (m + 1)) * (x[:, j:] * x[:, :-j]).sum(axis=1) / n
    se = np.sqrt(np.maximum(lrv, 0.0) / n)
    tiny = se <= 1e-12 * np.maximum(np.abs(mean), 1e-300)
    return np.where(tiny, np.where(mean != 0, np.inf, 0.0), mean / np.where(tiny, 1.0, se))


def supported_drift(w: np.ndarray, critical: float = CRITICAL_T) -> np.ndarray:
    """(S, n) differences -> (S,) their mean where |t| > ``critical``, else 0."""
    mean = w.mean(axis=1)
    return np.where(np.abs(drift_t(w)) > critical, mean, 0.0)
