"""drift: the window mean plus a damped, shrunk linear trend, fitted on the layer's history.

On real training the shares of a "stable" layer still drift over thousands of steps, in a
partly forecastable way; an undamped trend runs off over 2,000 steps, a plain window mean
lags. Per layer and expert this predictor forecasts

    f(j) = level + shrink * slope * (c + D(j)),   D(j) = phi (1 - phi^j) / (1 - phi)

with ``level`` the mean of the last 100 steps (its centre ``c`` buckets behind the origin),
``slope`` the least-squares slope of the last 500 steps, and the damping ``phi`` (per
bucket, from a damping horizon tau: phi = exp(-bucket / tau)) so the trend adds at most
``tau`` steps' worth of movement. ``shrink`` (0 .. 1) and ``tau`` are chosen per layer by
an inner rolling-origin evaluation on the layer's own history at the horizon asked for
(moetrace/predictors/inner.py); with shrink 0 it is the 100-step window mean. Vectorised over
layers and experts; forecasts are clipped at 0 and renormalised.
"""

from __future__ import annotations

import numpy as np

from moetrace.predictors.buckets import normalize_shares
from moetrace.predictors.inner import (
    Rule,
    evaluate,
    inner_origins,
    rule_scores,
    valid_origins,
)
from moetrace.predictors.template import BucketPredictor

DEFAULT_BUCKET = 20
LEVEL_STEPS = 100
TREND_STEPS = 500
SHRINKS = (0.0, 0.25, 0.5, 0.75, 1.0)
TAUS = (500, 1000, 2000)  # damping horizons in training steps


def level_and_slope(buckets: np.ndarray, level_b: int, trend_b: int,
                    start: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(L, E) mean of the last ``level_b`` buckets, (L, E) least-squares slope per bucket of
    the last ``trend_b`` buckets, and (L,) how many buckets the level's centre lies behind
    the last bucket. With ``start`` (per layer, the bucket where its stable state began;
    -1: none), neither window reaches back before it once the origin is past it."""
    n_layers, n, _ = buckets.shape
    first = np.zeros(n_layers, dtype=np.int64)
    if start is not None:
        first = np.where((start >= 0) & (start < n), start, 0)  # a bucket since it: enough
    m = np.clip(np.minimum(level_b, n - first), 1, None)  # (L,)
    t = np.clip(np.minimum(trend_b, n - first), 1, None)
    if (m == m[0]).all() and (t == t[0]).all():  # one window for all layers: slices
        m0, t0 = int(m[0]), int(t[0])
        level = buckets[:, -m0:].mean(axis=1)
        if t0 < 2:
            return level, np.zeros_like(level), (m - 1) / 2
        y = buckets[:, -t0:]
        x = np.arange(t0) - (t0 - 1) / 2.0
        slope = np.einsum("t,lte->le", x, y - y.mean(axis=1, keepdims=True)) / float(x @ x)
        return level, slope, (m - 1) / 2
    level = np.stack([buckets[i, n - m[i]:].mean(axis=0) for i in range(n_layers)])
    slope = np.zeros_like(level)
    for i in range(n_layers):
        if t[i] >= 2:
            y = buckets[i, n - t[i]:]
            x = np.arange(t[i]) - (t[i] - 1) / 2.0
            slope[i] = x @ (y - y.mean(axis=0)) / float(x @ x)
    return level, slope, (m - 1) / 2


def damped_path(k: int, phi: float) -> np.ndarray:
    """D(j) for j = 1..k: the trend's cumulative, damped reach after j buckets."""
    j = np.arange(1, k + 1, dtype=np.float64)
    return j if phi >= 1.0 else phi * (1.0 - phi ** j) / (1.0 - phi)


def drift_rule(level_b: int, trend_b: int, shrink: float, phi: float,
               start: np.ndarray | None = None) -> Rule:
    """The forecasting rule for one (shrink, phi): buckets (L, m, E) -> (L, k, E); with
    ``start`` its windows stop at each layer's stable onset (see level_and_slope)."""
    def rule(buckets: np.ndarray, k: int) -> np.ndarray:
        level, slope, centre = level_and_slope(buckets, level_b, trend_b, start)
        reach = centre[:, None] + damped_path(k, phi)[None, :]  # (L, k)
        path = level[:, None, :] + shrink * slope[:, None, :] * reach[:, :, None]
        return normalize_shares(path)
    return rule


def drift_grid(bucket: int, start: np.ndarray | None = None) -> list[tuple[str, Rule]]:
    """Every (shrink, tau) candidate at this bucket size, named for the report."""
    level_b, trend_b = max(1, LEVEL_STEPS // bucket), max(2, TREND_STEPS // bucket)
    out = []
    for shrink in SHRINKS:
        for tau in TAUS if shrink else TAUS[:1]:
            out.append((f"drift(shrink={shrink:g},tau={tau})",
                        drift_rule(level_b, trend_b, shrink, float(np.exp(-bucket / tau)),
                                   start)))
    return out


def choose(candidates: list[tuple[str, Rule]], buckets: np.ndarray, k: int,
           fallback: int = 0, start: np.ndarray | None = None,
           allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per layer, the candidate with the smallest inner score at horizon k buckets
    (inner.rule_scores; ties: the earlier one), and the (C, L) scores; ``fallback`` for a
    layer without an inner origin (``start``: per layer the bucket of its stable onset, see
    inner.valid_origins; ``allowed``: (C, L) which candidates a layer may use)."""
    origins = inner_origins(buckets.shape[1], k)
    nothing = np.full((len(candidates), buckets.shape[0]), np.nan)
    if len(origins) == 0:
        return np.full(buckets.shape[0], fallback), nothing
    valid = valid_origins(origins, start)
    errors = rule_scores(evaluate([rule for _, rule in candidates], buckets, origins, k)[0],
                         valid)
    if allowed is not None:
        errors = np.where(allowed, errors, np.inf)
    known = ~np.isnan(errors).any(axis=0)
    choice = np.where(known, np.argmin(np.nan_to_num(errors, nan=np.inf), axis=0), fallback)
    return choice, errors


class DriftPredictor(BucketPredictor):
    """Window mean plus a damped, shrunk trend; shrink and damping chosen per layer."""

    name = "drift"
    stateful = False  # each fit is a function of the history alone
    tuned = True  # a rule per asked horizon (moetrace.predictors.template)
    default_bucket = DEFAULT_BUCKET
    min_buckets = 2

    def _fit(self, buckets: np.ndarray, history) -> None:
        self._candidates = drift_grid(self.step_bucket)
        #: per tuning (buckets): each layer's candidate and the (C, L) inner scores
        self.choices = {k: choose(self._candidates, buckets, k) for k in self.tunings()}
        self._buckets = buckets

    @property
    def choice(self) -> np.ndarray:
        """(L,) each layer's candidate at the longest asked horizon."""
        return self.choices[self.tunings()[-1]][0]

    @property
    def errors(self) -> np.ndarray:
        """(C, L) the inner scores it was chosen by."""
        return self.choices[self.tunings()[-1]][1]

    @property
    def chosen(self) -> list[str]:
        """The candidate each layer uses at the longest asked horizon, by name."""
        return [self._candidates[c][0] for c in self.choice]

    def _forecast_buckets(self, k: int) -> np.ndarray:
        out = np.empty((self._buckets.shape[0], k, self._buckets.shape[2]))
        choice = self.choices[self.tuning(k)][0]
        for c in np.unique(choice):
            layers = choice == c
            out[layers] = self._candidates[c][1](self._buckets[layers], k)
        return out
