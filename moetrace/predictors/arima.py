"""arima: one ARIMA(p, d, q) per (layer, expert) series of bucketed shares, renormalised.

Fast without changing the model: series are bucket means (default 20 steps, so a 2,000-step
horizon is 100 model steps and per-step sampling noise is averaged down); parameters are
estimated with Hannan-Rissanen (statsmodels) on the last 4,000 steps over all cores, an
explosive AR estimate falling back to a pure MA (arima_fit.py); the model's constant is the
level (window mean) for d = 0, for d = 1 a drift only where a HAC t-test on the window's
differences supports it (arima_drift.py: a linear trend is followed, a transient or a chance
excursion in the window is not extrapolated) and, as in statsmodels, none for d = 2.
Filtering and forecasting run vectorised over all series. When the same object is refitted
at a later origin of the same trace, the AR and MA coefficients are kept, the constant is
recomputed from the new window (a stale drift would be extrapolated over 2,000 steps) and
only the new data is filtered. Coefficients are re-estimated once the history has doubled
or grown by ``refit_every`` steps (default 10,000), so a backtest pays for estimation a few
times, not at every origin, and coefficients from a short, early history do not last.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moetrace.errors import ParameterError
from moetrace.predictors.arima_fit import estimate_many
from moetrace.predictors.arima_order import select_orders
from moetrace.predictors.arima_drift import supported_drift
from moetrace.predictors.arma import arma_forecast, css_residuals, difference, integrate
from moetrace.predictors.template import BucketPredictor, HistoryMark
from moetrace.trace.shares import Loads

DEFAULT_BUCKET = 20
#: Training steps the model is fitted and filtered on (200 buckets at the default bucket):
#: enough for ARIMA(5,1,5), and short enough that the transient leaves the window soon after it
#: ends (400 buckets made stable-state errors up to 1.6x larger on the simulated samples).
FIT_STEPS = 4000
REFIT_EVERY = 10_000


def model_constant(w: np.ndarray, d: int) -> np.ndarray:
    """The constant of the model from the (E, n) differenced window: the level (its mean) for
    d = 0; for d = 1 the drift (mean difference) only where a HAC t-test supports it, else 0;
    none for d = 2 (statsmodels' convention)."""
    if d == 0:
        return w.mean(axis=1)
    if d == 1:
        return supported_drift(w)
    return np.zeros(w.shape[0])


@dataclass
class LayerModel:
    """Fixed ARMA coefficients of one layer's E series: shared (p, d, q), per-series values."""

    order: tuple[int, int, int]
    phi: np.ndarray  # (E, p)
    theta: np.ndarray  # (E, q)


@dataclass
class LayerState:
    """What forecasting needs after filtering a layer's recent history."""

    mu: np.ndarray  # (E,) the constant: level if d = 0, supported drift (or 0) if d = 1
    w: np.ndarray  # (E, n) demeaned differences
    e: np.ndarray  # (E, n) innovations
    lasts: np.ndarray  # (E, d) last value of each lower difference order


class ArimaPredictor(BucketPredictor):
    """ARIMA per series (``--order p,d,q`` or chosen per layer), Hannan-Rissanen estimates."""

    name = "arima"
    default_bucket = DEFAULT_BUCKET
    min_buckets = 30

    def __init__(self, options=None, *, refit_every: int = REFIT_EVERY,
                 fit_steps: int = FIT_STEPS, **inputs):
        super().__init__(options, **inputs)
        self.refit_every = refit_every
        self.fit_steps = fit_steps
        self.models: list[LayerModel] | None = None
        self._estimated_on: HistoryMark | None = None

    def _fit(self, buckets: np.ndarray, history: Loads) -> None:
        recent = buckets[:, -self.buckets_in(self.fit_steps):]
        if self._estimated_on is None or not self._estimated_on.still_fresh(history,
                                                                             self.refit_every):
            self.models = self._estimate(recent)
            self._estimated_on = HistoryMark.of(history)
        self._states = [self._filter(model, layer.T) for model, layer in zip(self.models, recent)]

    def _estimate(self, recent: np.ndarray) -> list[LayerModel]:
        n_layers, n, n_experts = recent.shape
        if self.options.order is None:
            orders = select_orders(recent, lambda done, total: self._report(
                "arima: choosing orders", done, total))
        else:
            orders = [self.options.order] * n_layers
        for p, d, q in orders:
            if n - d < 2 * max(p, q, 1) + p + q + 10:
                raise ParameterError(f"arima: ARIMA({p},{d},{q}) needs more than {n} buckets of "
                                     f"{self.bucket} steps; use a longer history or --bucket")
        series, pq = [], []
        for (p, d, q), layer in zip(orders, recent):
            w, _ = difference(layer.T, d)
            series.extend(w - model_constant(w, d)[:, None])
            pq.extend([(p, q)] * n_experts)
        fitted = estimate_many(series, pq, lambda done, total: self._report(
            "arima: estimating parameters", done, total))
        models = []
        for i, order in enumerate(orders):
            part = fitted[i * n_experts:(i + 1) * n_experts]
            models.append(LayerModel(order, np.array([f[0] for f in part]).reshape(n_experts, -1),
                                     np.array([f[1] for f in part]).reshape(n_experts, -1)))
        return models

    @staticmethod
    def _filter(model: LayerModel, levels: np.ndarray) -> LayerState:
        w, lasts = difference(levels, model.order[1])
        mu = model_constant(w, model.order[1])
        w = w - mu[:, None]
        return LayerState(mu, w, css_residuals(w, model.phi, model.theta), lasts)

    def _forecast_buckets(self, k: int) -> np.ndarray:
        out = []
        for model, state in zip(self.models, self._states):
            diffs = arma_forecast(state.w, state.e, model.phi, model.theta, k) + state.mu[:, None]
            out.append(integrate(diffs, state.lasts).T)
        return np.stack(out)
