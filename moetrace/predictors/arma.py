"""ARIMA arithmetic on many series at once: differencing, root fixing, filtering, forecasting.

Everything here is vectorised over a batch of S series (one per layer and expert), so that
once parameters are known, re-filtering new data and forecasting all 1,536 series of a
350M trace costs a few numpy loops over time, not 1,536 model objects. Conventions follow
statsmodels: w[t] = sum_i phi[i] w[t-1-i] + e[t] + sum_j theta[j] e[t-1-j].
"""

from __future__ import annotations

import numpy as np

#: Roots of the AR and MA polynomials are kept at least this far outside the unit circle.
ROOT_MARGIN = 1.001


def difference(levels: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, n) levels -> (S, n-d) d-th differences, and (S, d) the last value of each lower
    difference order (what integration needs to return to levels)."""
    lasts = []
    w = levels
    for _ in range(d):
        lasts.append(w[:, -1])
        w = np.diff(w, axis=1)
    return w, np.stack(lasts, axis=1) if lasts else np.zeros((levels.shape[0], 0))


def integrate(diffs: np.ndarray, lasts: np.ndarray) -> np.ndarray:
    """Inverse of :func:`difference` for forecasts: (S, k) d-th differences -> (S, k) levels."""
    out = diffs
    for i in range(lasts.shape[1] - 1, -1, -1):
        out = lasts[:, i:i + 1] + np.cumsum(out, axis=1)
    return out


def min_root(coefs: np.ndarray, sign: float) -> float:
    """Smallest root modulus of the lag polynomial 1 + sign*(c1 z + ... + cp z^p) (inf if none):
    below 1 the AR part is explosive / the MA part non-invertible."""
    coefs = np.asarray(coefs, dtype=np.float64)
    if coefs.size == 0 or not coefs.any():
        return np.inf
    roots = np.polynomial.polynomial.polyroots(np.concatenate([[1.0], sign * coefs]))
    return float(np.abs(roots).min())


def fix_roots(coefs: np.ndarray, sign: float) -> np.ndarray:
    """Make the lag polynomial 1 + sign*(c1 z + ... + cp z^p) stationary/invertible.

    Roots inside the unit circle are reflected outside (same autocorrelations for an MA) and
    roots on or near it are pushed to ``ROOT_MARGIN``. ``sign`` is -1 for AR, +1 for MA.
    """
    coefs = np.asarray(coefs, dtype=np.float64)
    if coefs.size == 0 or not coefs.any():
        return coefs
    roots = np.polynomial.polynomial.polyroots(np.concatenate([[1.0], sign * coefs]))
    size = np.abs(roots)
    if size.min() >= ROOT_MARGIN:
        return coefs
    roots = np.where(size < 1.0, 1.0 / np.conj(roots), roots)
    size = np.abs(roots)
    roots = np.where(size < ROOT_MARGIN, roots * (ROOT_MARGIN / size), roots)
    poly = np.polynomial.polynomial.polyfromroots(roots).real
    return sign * (poly[1:] / poly[0])


def ar_part(w: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """(S, n) series, (S, P) AR coefficients -> (S, n) sum_i phi[i] w[t-1-i] (zeros before 0)."""
    out = np.zeros_like(w)
    for i in range(phi.shape[1]):
        out[:, i + 1:] += phi[:, i:i + 1] * w[:, :w.shape[1] - i - 1]
    return out


def css_residuals(w: np.ndarray, phi: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Innovations e[t] of the ARMA model given data w, with e and w taken as 0 before t=0
    (conditional sum of squares filtering; the start-up effect decays for invertible MA)."""
    s, n = w.shape
    q = theta.shape[1]
    rest = w - ar_part(w, phi)
    if q == 0:
        return rest
    e = np.zeros((s, q + n))
    rev = theta[:, ::-1]  # so that a window e[t-q .. t-1] lines up with theta[q-1 .. 0]
    for t in range(n):
        e[:, q + t] = rest[:, t] - np.einsum("sj,sj->s", rev, e[:, t:t + q])
    return e[:, q:]


def arma_forecast(w: np.ndarray, e: np.ndarray, phi: np.ndarray, theta: np.ndarray,
                  k: int) -> np.ndarray:
    """(S, k) point forecasts of w beyond its end, future innovations set to 0."""
    s, n = w.shape
    p, q = phi.shape[1], theta.shape[1]
    buf = np.zeros((s, p + k))
    take = min(p, n)
    buf[:, p - take:p] = w[:, n - take:]
    past_e = np.zeros((s, q))
    take_e = min(q, n)
    past_e[:, q - take_e:] = e[:, n - take_e:]
    ar_rev, ma_rev = phi[:, ::-1], theta[:, ::-1]
    for j in range(k):
        value = np.einsum("sj,sj->s", ar_rev, buf[:, j:j + p])
        if j < q:
            value += np.einsum("sj,sj->s", ma_rev[:, :q - j], past_e[:, j:])
        buf[:, p + j] = value
    return buf[:, p:]
