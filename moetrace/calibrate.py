"""How far a forecast can be trusted: intervals and expected error for any predictor.

A predictor that calibrates itself (``auto``, from its own inner evaluation) answers
``uncertainty(horizon)``; for the others, :func:`calibrate` asks the same question the hard
way, through the one backtest engine: it backtests the predictor at a few inner origins of
the history (in increasing order, so arima and lstm reuse their estimates), and turns the
errors of those forecasts against what followed into split-conformal bounds of every expert's
mean share over the horizon and the layer's expected per-step error rate
(moetrace/predictors/inner.py). History only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moetrace.backtest import backtest
from moetrace.errors import ParameterError
from moetrace.metrics import nanmean_rows
from moetrace.predictors.base import Predictor, Uncertainty
from moetrace.predictors.inner import conformal_interval
from moetrace.trace.shares import Loads

#: inner origins fitted for a predictor without a calibration of its own
ORIGINS = 4
LEVEL = 0.8


def inner_targets(history: Loads, horizon: int, origins: int = ORIGINS) -> np.ndarray:
    """Up to ``origins`` recorded steps, a quarter horizon apart, the last a horizon before
    the history's last step (none before the second recorded step)."""
    last = int(history.steps[-1])
    stride = max(history.interval, horizon // 4)
    targets = np.array([last - horizon - j * stride for j in range(origins)][::-1])
    targets = targets[targets >= int(history.steps[0])]
    if targets.size == 0:
        return targets
    snapped = np.unique(history.snap(targets))
    return snapped[snapped > int(history.steps[0])]


def calibrate(make: Callable[[], Predictor], history: Loads, horizon: int,
              forecast: np.ndarray, level: float = LEVEL,
              origins: int = ORIGINS) -> Uncertainty | None:
    """Uncertainty of ``forecast`` (L, H, E), made from ``history`` by a predictor that
    ``make()`` creates, from its errors at up to ``origins`` inner origins (see
    :func:`inner_targets`); None if the history is too short for one, or the predictor could
    be fitted at none of them."""
    targets = inner_targets(history, horizon, origins)
    if targets.size == 0:
        return None
    try:
        result = backtest(history, [make()], [horizon], origins=targets, min_history=1,
                          lookahead_radius=None, keep_means=True)
    except ParameterError:  # too short for this predictor at every inner origin
        return None
    scores = next(iter(result.scores.values()))
    past_forecast, past_actual = scores.means
    fitted = np.isfinite(scores.metrics["error_rate"]).all(axis=1)
    if not fitted.any():
        return None
    lower, upper = conformal_interval(forecast.mean(axis=1), past_forecast[fitted],
                                      past_actual[fitted], level)
    expected = nanmean_rows(scores.metrics["error_rate"][fitted].T)
    return Uncertainty(int(horizon), lower, upper, expected, level)
