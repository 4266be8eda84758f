"""How far a forecast can be trusted: intervals and expected error for any predictor.

A predictor that calibrates itself (``auto``, from its own inner evaluation) answers
``uncertainty(horizon)``; for the others, :func:`calibrate` asks the same question the hard
way: it fits the predictor at a few inner origins of the history (in increasing order, so
arima and lstm reuse their estimates), compares each forecast with what followed, and turns
those errors into split-conformal bounds of every expert's mean share over the horizon and
the layer's expected per-step error rate (moetrace/predictors/inner.py). History only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moetrace.predictors.base import Predictor, Uncertainty
from moetrace.predictors.inner import conformal_interval
from moetrace.trace.shares import Loads

#: inner origins fitted for a predictor without a calibration of its own
ORIGINS = 4
LEVEL = 0.8


def calibrate(make: Callable[[], Predictor], history: Loads, horizon: int,
              forecast: np.ndarray, level: float = LEVEL,
              origins: int = ORIGINS) -> Uncertainty | None:
    """Uncertainty of ``forecast`` (L, H, E), made from ``history`` by a predictor that
    ``make()`` creates, from its errors at up to ``origins`` inner origins spaced a quarter
    horizon apart and ending a horizon before the history's last step (None if the history
    is too short for one)."""
    last = int(history.steps[-1])
    stride = max(history.interval, horizon // 4)
    targets = [last - horizon - j * stride for j in range(origins)][::-1]
    model, forecasts, actuals, errors = make(), [], [], []
    for target in targets:
        past = history.upto(target)
        rows = (history.steps > target) & (history.steps <= target + horizon)
        if past.n_steps == 0 or not rows.any():
            continue
        try:
            f = np.asarray(model.fit(past).forecast(horizon))
        except Exception:  # noqa: BLE001 - too short for this predictor at this origin: skip it
            continue
        ahead = history.steps[rows] - int(past.steps[-1]) - 1
        f = f[:, ahead]
        actual = history.shares[:, rows]
        forecasts.append(f.mean(axis=1))
        actuals.append(actual.mean(axis=1))
        errors.append(np.abs(f - actual).sum(axis=-1).mean(axis=-1))
    if not forecasts:
        return None
    lower, upper = conformal_interval(forecast.mean(axis=1), np.stack(forecasts),
                                      np.stack(actuals), level)
    return Uncertainty(int(horizon), lower, upper, np.mean(errors, axis=0), level)
