"""The noise floor: how much step-to-step movement of the shares sampling alone explains.

Both estimates are expressed as a per-step error rate (sum over experts of |observed share -
underlying share|), the error a perfect predictor of the underlying share would still make:

* **multinomial**: each of the step's ``n`` tokens picks ``k`` distinct experts independently,
  expert ``e`` with probability ``q_e = k * p_e``; its count is Binomial(n, q_e) and its share
  (count over the ``k * n`` slots) has variance ``q_e (1 - q_e) / (k^2 n)``. For top-1 this is
  the familiar ``p (1 - p) / N``. With ``k > 1`` the independent unit is the token, not the
  slot: a token's ``k`` slots go to distinct experts, which makes the shares *less* noisy than
  ``k * n`` independent slots would. The expected absolute error of a near-normal share is
  ``sqrt(2 / pi)`` times its standard deviation.
* **empirical**: from the data, without assuming tokens route independently. If a share is a
  slowly moving level plus independent noise, half the mean squared successive difference
  estimates the noise variance (von Neumann); real movement of the level between steps adds
  to it, so in a fluctuating state it is an upper bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SQRT_2_OVER_PI = float(np.sqrt(2.0 / np.pi))


@dataclass(frozen=True)
class NoiseFloor:
    """Per-step error-rate floor of one layer in one state, as fractions (0.0125 = 1.25%).

    ``scale`` is the layer's noise scale (:func:`noise_scale`): how much noisier than
    independent sampling its routing is, measured where the shares move no more than noise.
    """

    multinomial: float
    empirical: float
    scale: float = 1.0
    #: whether the floor rests on enough tokens: the underlying shares it is computed from are
    #: window means, and with few tokens per step those are themselves noisy
    reliable: bool = True

    @property
    def value(self) -> float:
        """The floor shown: the multinomial one corrected by the noise scale, capped by the
        empirical one.

        For independently routed tokens (scale 1) that is the multinomial floor, unless the
        data move even less. Correlated routing (tokens of one sequence choosing alike) makes
        the real noise larger than multinomial; the scale carries that over from the quiet
        windows without counting a fluctuating state's real movement as noise.
        """
        calibrated = self.multinomial * float(np.sqrt(self.scale))
        if np.isnan(self.empirical):
            return calibrated
        return min(calibrated, self.empirical)


def multinomial_share_var(shares: np.ndarray, totals: np.ndarray, top_k: int = 1) -> np.ndarray:
    """Sampling variance of each observed share, shape like ``shares`` (T, E).

    ``totals`` (T,) counts the step's routing slots (tokens x top_k), as the trace does.
    """
    tokens = np.asarray(totals, dtype=np.float64)[:, None] / top_k
    q = np.minimum(shares * top_k, 1.0)
    return q * (1.0 - q) / (top_k * top_k * tokens)


#: below this binomial variance n q (1 - q) the normal approximation of a count's absolute
#: deviation is replaced by the exact one (it is within 1% above it)
EXACT_BELOW = 50.0


def binomial_abs_deviation(n: np.ndarray, q: np.ndarray) -> np.ndarray:
    """E |X - n q| for X ~ Binomial(n, q), exactly (De Moivre): 2 v (1 - q) P(X = v), with
    v = floor(n q) + 1. Elementwise over broadcast arrays."""
    from scipy.stats import binom

    n = np.asarray(n, dtype=np.float64)
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
    v = np.floor(n * q) + 1
    return 2.0 * v * (1.0 - q) * binom.pmf(v, n, q)


def multinomial_floor(shares: np.ndarray, totals: np.ndarray, top_k: int = 1) -> np.ndarray:
    """Expected sum over experts of |observed - underlying share| at each step, shape (T,),
    for underlying ``shares`` (T, E) and ``totals`` (T,) routed slots.

    A count is Binomial(tokens, k p); its share's absolute deviation is sqrt(2/pi) times its
    standard deviation where the count is near normal, and the exact binomial mean absolute
    deviation where it is not (a few tokens per step: one token with top-2 gives a floor of 1,
    not the 0 that a plug-in of the observed shares would)."""
    tokens = np.asarray(totals, dtype=np.float64)[:, None] / top_k
    q = np.minimum(np.asarray(shares, dtype=np.float64) * top_k, 1.0)
    normal = SQRT_2_OVER_PI * np.sqrt(q * (1.0 - q) / tokens) / top_k
    small = tokens * q * (1.0 - q) < EXACT_BELOW
    if small.any():
        t = np.broadcast_to(tokens, q.shape)
        normal[small] = binomial_abs_deviation(t[small], q[small]) / (top_k * t[small])
    return normal.sum(axis=1)


def successive_half_sq_diff(shares: np.ndarray) -> np.ndarray:
    """Half the squared change of each share from the previous step, shape (T-1, E)."""
    d = np.diff(shares, axis=0)
    np.square(d, out=d)
    d *= 0.5
    return d


def empirical_floor(half_sq_diff: np.ndarray, pairs: np.ndarray) -> float:
    """Empirical floor over the successive-step ``pairs`` (bool, T-1) selected; NaN if none.

    The noise variance of each expert is the mean of its half squared differences over the
    selected pairs; the floor is ``sqrt(2/pi) * sum_e sqrt(variance_e)``.
    """
    return empirical_floor_of(half_sq_diff[pairs].sum(axis=0), int(pairs.sum()))


def empirical_floor_of(sums: np.ndarray, pairs: int) -> float:
    """:func:`empirical_floor` from each expert's half squared differences summed over the
    ``pairs`` selected (what a pass over a layer's steps a range at a time accumulates)."""
    if pairs == 0:
        return float("nan")
    return SQRT_2_OVER_PI * float(np.sqrt(np.asarray(sums) / pairs).sum())


def noise_scale(window_var: np.ndarray, window_steady: np.ndarray, window_sampling: np.ndarray,
                stable_ratio: float) -> float:
    """How much noisier than independent sampling the layer's routing is (at least 1).

    Inputs are per window, averaged over experts: the share variance, half the mean squared
    successive difference and the multinomial sampling variance. The scale is the median of
    steady / sampling over "white" windows (variance at most ``stable_ratio`` times the
    step-to-step noise: no movement beyond noise), but never above the 5% quantile of that
    ratio over all windows: noise cannot exceed what the quietest windows show, which keeps a
    trace that is transient throughout (with large step-to-step jitter) from passing its
    jitter off as noise.
    """
    ratio = window_steady / window_sampling
    white = window_var <= stable_ratio * window_steady
    if not white.any():
        return 1.0
    return max(1.0, min(float(np.median(ratio[white])), float(np.quantile(ratio, 0.05))))
