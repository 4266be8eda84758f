"""naive: tomorrow looks like today. The last observed share (or last bucket), held constant.

The reference every other predictor must beat: a forecast that does not beat it has learnt
nothing about the trace.
"""

from __future__ import annotations

import numpy as np

from moetrace.predictors.template import BucketPredictor


def last_value(buckets: np.ndarray, k: int) -> np.ndarray:
    """(L, n, E) -> (L, k, E): the last bucket repeated k times."""
    return np.repeat(buckets[:, -1:], k, axis=1)


class NaivePredictor(BucketPredictor):
    """Repeat the last observed share; ``bucket`` > 1 repeats the mean of the last b steps."""

    name = "naive"
    stateful = False  # each fit is a function of the history alone
    default_bucket = 1

    def _fit(self, buckets: np.ndarray, history) -> None:
        self._last = buckets[:, -1:].copy()

    def _forecast_buckets(self, k: int) -> np.ndarray:
        return last_value(self._last, k)
