"""arima: one ARIMA(p, d, q) per (layer, expert) series of bucketed shares, renormalised.

Fast without changing the model: series are bucket means (default 20 steps, so a 2,000-step
horizon is 100 model steps and per-step sampling noise is averaged down); parameters are
estimated with Hannan-Rissanen (statsmodels) on the last 400 buckets over all cores; the
mean of the differenced series is kept for d <= 1 (the level for d = 0, the drift for d = 1, so
a linear trend is followed) and, as in statsmodels, no constant is used for d = 2.
Filtering and forecasting run vectorised over all series. When the same object is refitted
at a later origin of the same trace, the parameters are kept and only the new data is
filtered with them; they are re-estimated once the history has grown by ``refit_every``
steps (default 10,000), so a backtest pays for estimation once or twice, not at every origin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moetrace.errors import ParameterError
from moetrace.predictors.arima_fit import estimate_many
from moetrace.predictors.arima_order import select_orders
from moetrace.predictors.arma import arma_forecast, css_residuals, difference, integrate
from moetrace.predictors.template import BucketPredictor
from moetrace.trace.shares import Loads

DEFAULT_BUCKET = 20
FIT_BUCKETS = 400
REFIT_EVERY = 10_000


@dataclass
class LayerModel:
    """Fixed ARIMA parameters of one layer's E series: shared (p, d, q), per-series values."""

    order: tuple[int, int, int]
    phi: np.ndarray  # (E, p)
    theta: np.ndarray  # (E, q)
    mu: np.ndarray  # (E,) mean of the differenced series (the drift when d = 1)


@dataclass
class LayerState:
    """What forecasting needs after filtering a layer's recent history."""

    w: np.ndarray  # (E, n) demeaned differences
    e: np.ndarray  # (E, n) innovations
    lasts: np.ndarray  # (E, d) last value of each lower difference order


class ArimaPredictor(BucketPredictor):
    """ARIMA per series (``--order p,d,q`` or chosen per layer), Hannan-Rissanen estimates."""

    name = "arima"
    default_bucket = DEFAULT_BUCKET
    min_buckets = 30

    def __init__(self, options=None, *, refit_every: int = REFIT_EVERY,
                 fit_buckets: int = FIT_BUCKETS):
        super().__init__(options)
        self.refit_every = refit_every
        self.fit_buckets = fit_buckets
        self.models: list[LayerModel] | None = None
        self._estimated_on: tuple | None = None

    def _fit(self, buckets: np.ndarray, history: Loads) -> None:
        recent = buckets[:, -self.fit_buckets:]
        if not self._can_reuse(history):
            self.models = self._estimate(recent)
            last = history.n_steps - 1
            self._estimated_on = (history.layers, history.n_experts, history.n_steps,
                                  int(history.steps[last]), history.counts[:, last].copy())
        self._states = [self._filter(model, layer.T) for model, layer in zip(self.models, recent)]

    def _can_reuse(self, history: Loads) -> bool:
        """Parameters from an earlier fit may serve if this history extends that one (same
        layers, same step and counts where it ended) by fewer than ``refit_every`` steps."""
        if self._estimated_on is None:
            return False
        layers, n_experts, n_steps, step, counts = self._estimated_on
        return (history.layers == layers and history.n_experts == n_experts
                and n_steps <= history.n_steps < n_steps + self.refit_every
                and int(history.steps[n_steps - 1]) == step
                and np.array_equal(history.counts[:, n_steps - 1], counts))

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
        series, pq, mus = [], [], []
        for (p, d, q), layer in zip(orders, recent):
            w, _ = difference(layer.T, d)
            mu = w.mean(axis=1) if d <= 1 else np.zeros(n_experts)
            series.extend(w - mu[:, None])
            pq.extend([(p, q)] * n_experts)
            mus.append(mu)
        fitted = estimate_many(series, pq, lambda done, total: self._report(
            "arima: estimating parameters", done, total))
        models = []
        for i, order in enumerate(orders):
            part = fitted[i * n_experts:(i + 1) * n_experts]
            models.append(LayerModel(order, np.array([f[0] for f in part]).reshape(n_experts, -1),
                                     np.array([f[1] for f in part]).reshape(n_experts, -1),
                                     mus[i]))
        return models

    @staticmethod
    def _filter(model: LayerModel, levels: np.ndarray) -> LayerState:
        w, lasts = difference(levels, model.order[1])
        w = w - model.mu[:, None]
        return LayerState(w, css_residuals(w, model.phi, model.theta), lasts)

    def _forecast_buckets(self, k: int) -> np.ndarray:
        out = []
        for model, state in zip(self.models, self._states):
            diffs = arma_forecast(state.w, state.e, model.phi, model.theta, k) + model.mu[:, None]
            out.append(integrate(diffs, state.lasts).T)
        return np.stack(out)
