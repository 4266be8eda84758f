"""sw_avg: the sliding-window average of the paper, slid forward recursively.

The share at the next step is the mean of the last w observed steps; to go k steps ahead the
forecast is appended to the window and the window slides (x[n+j] = mean(x[n+j-w .. n+j-1])).
This recursion converges to a constant (a weighted mean of the last w observations), so for
horizons much longer than w the forecast is flat.
"""

from __future__ import annotations

import numpy as np

from moetrace.defaults import SW_AVG_WINDOW
from moetrace.errors import ParameterError
from moetrace.predictors.template import BucketPredictor

#: Default window in steps: long enough to average away per-step sampling noise (about 1.6% of
#: a share at 350M scale, so ~0.05% over 1,000 steps), short enough to follow slow drift, and
#: the window production balancers use (vLLM EPLB defaults to 1,000 steps).
DEFAULT_WINDOW = SW_AVG_WINDOW


def sliding_window_average(series: np.ndarray, k: int, window: int) -> np.ndarray:
    """(L, n, E) -> (L, k, E): recursive sliding-window mean over the last ``window`` values."""
    n_layers, n, n_experts = series.shape
    w = min(window, n)
    buf = np.empty((n_layers, w + k, n_experts))
    buf[:, :w] = series[:, n - w:]
    total = buf[:, :w].sum(axis=1)
    for j in range(k):
        buf[:, w + j] = total / w
        total += buf[:, w + j] - buf[:, j]
    return buf[:, w:]


class SlidingWindowAveragePredictor(BucketPredictor):
    """Mean of the last ``window`` steps (default 1,000), slid forward recursively."""

    name = "sw_avg"
    stateful = False  # each fit is a function of the history alone
    default_bucket = 1

    def __init__(self, options=None, **inputs):
        super().__init__(options, **inputs)
        self.window = DEFAULT_WINDOW if self.options.window is None else self.options.window
        if self.window < self.bucket:
            raise ParameterError(f"sw_avg: window ({self.window} steps) must be at least one "
                                 f"bucket ({self.bucket} steps)")

    def _fit(self, buckets: np.ndarray, history) -> None:
        self._window_buckets = self.buckets_in(self.window)
        self._recent = buckets[:, -self._window_buckets:].copy()

    def _forecast_buckets(self, k: int) -> np.ndarray:
        return sliding_window_average(self._recent, k, self._window_buckets)
