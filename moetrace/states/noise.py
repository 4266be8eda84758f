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


def multinomial_floor(shares: np.ndarray, totals: np.ndarray, top_k: int = 1) -> np.ndarray:
    """Expected sum over experts of |observed - underlying share| at each step, shape (T,)."""
    return SQRT_2_OVER_PI * np.sqrt(multinomial_share_var(shares, totals, top_k)).sum(axis=1)


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
    if not pairs.any():
        return float("nan")
    var = half_sq_diff[pairs].mean(axis=0)
    return SQRT_2_OVER_PI * float(np.sqrt(var).sum())


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
