"""Estimating ARMA parameters for many series with statsmodels' Hannan-Rissanen estimator.

Exact maximum likelihood (statsmodels' default) costs about half a second per ARIMA(5,1,5)
fit, so over ten minutes for the 1,536 series of a 350M trace; Hannan-Rissanen (a long AR to
estimate the innovations, then least squares on lagged values and innovations, then a bias
correction step) estimates the same ARMA parameters, consistently, in about 10 ms. Series are
shared out over the CPU cores in worker processes, each limited to one BLAS thread.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from moetrace.predictors.arma import fix_roots, min_root

#: An AR polynomial with a root closer to the unit circle than this counts as non-stationary.
AR_MARGIN = 1.01
#: Below this many series the work is done in-process (starting workers costs a few seconds).
POOL_THRESHOLD = 256
#: Series per task sent to a worker: small enough for a smooth progress bar.
CHUNK = 32


def _hannan_rissanen(w: np.ndarray, p: int, q: int, bias_correction: bool
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """Raw (phi, theta) estimates, None if the estimator fails (too short, singular, not finite)."""
    from statsmodels.tsa.arima.estimators.hannan_rissanen import hannan_rissanen

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            params, _ = hannan_rissanen(w, ar_order=p, ma_order=q, demean=False,
                                        unbiased=None if bias_correction else False)
        except (ValueError, np.linalg.LinAlgError):
            return None
    phi, theta = np.asarray(params.ar_params, float), np.asarray(params.ma_params, float)
    if not (np.isfinite(phi).all() and np.isfinite(theta).all()):
        return None
    return phi, theta


def estimate_one(w: np.ndarray, p: int, q: int, bias_correction: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """AR and MA coefficients of one zero-mean series; zeros for a flat series or a failure
    of the estimator (too short or singular).

    An AR estimate that is explosive or within ``AR_MARGIN`` of a unit root (Hannan-Rissanen
    does not constrain it; over-parameterised ARMA on noisy shares often lands there, with
    near-cancelling AR and MA roots) falls back to the pure MA(q) estimate of the same series
    (AR coefficients 0): integrated over a 100-bucket horizon a near-unit AR root on the
    differences extrapolates a slope. A non-invertible MA is replaced by its invertible
    equivalent (roots reflected: the same autocorrelations). Without the bias-correction step
    (a third of the cost) the two-step estimates are still consistent: good enough to rank
    candidate orders."""
    if p + q == 0 or np.ptp(w) <= 1e-12 * max(1.0, np.abs(w).max()):
        return np.zeros(p), np.zeros(q)
    fitted = _hannan_rissanen(w, p, q, bias_correction)
    if fitted is not None and p and min_root(fitted[0], -1.0) < AR_MARGIN:
        pure_ma = _hannan_rissanen(w, 0, q, bias_correction) if q else (np.zeros(0), np.zeros(0))
        fitted = None if pure_ma is None else (np.zeros(p), pure_ma[1])
    if fitted is None:
        return np.zeros(p), np.zeros(q)
    return fitted[0], fix_roots(fitted[1], 1.0)


def _estimate_chunk(series: np.ndarray, orders: list[tuple[int, int]],
                    bias_correction: bool) -> list:
    return [estimate_one(w, p, q, bias_correction) for w, (p, q) in zip(series, orders)]


def _limit_threads() -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def worker_count() -> int:
    """CPU cores this process may use: its share when it is a worker of moetrace.scale
    (``MOETRACE_CORES``), else the cores it may run on."""
    share = os.environ.get("MOETRACE_CORES", "")
    if share.isdigit() and int(share) > 0:
        return int(share)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def estimate_many(series: list[np.ndarray], orders: list[tuple[int, int]],
                  progress: Callable[[int, int], None] | None = None,
                  bias_correction: bool = True) -> list:
    """(phi, theta) for each series and its (p, q), in order; over all cores when it pays."""
    total = len(series)
    chunks = [(series[i:i + CHUNK], orders[i:i + CHUNK], bias_correction)
              for i in range(0, total, CHUNK)]
    results: list = []
    workers = min(worker_count(), len(chunks))
    # forked workers: no re-import of the caller's __main__, no guard needed in user scripts
    if total < POOL_THRESHOLD or workers < 2 or "fork" not in mp.get_all_start_methods():
        for chunk in chunks:
            results.extend(_estimate_chunk(*chunk))
            if progress:
                progress(len(results), total)
        return results
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"),
                             initializer=_limit_threads) as pool:
        for part in pool.map(_estimate_chunk, *zip(*chunks)):
            results.extend(part)
            if progress:
                progress(len(results), total)
    return results
