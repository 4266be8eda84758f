"""auto: per layer, the rule that forecast this layer best on its own recent history.

At every fit, for every layer, ``auto`` asks the online detector (moetrace/states/online.py,
fed only the history, incrementally across successive fits) whether the layer is stable and
since when, then scores a small set of cheap rules by an inner rolling-origin evaluation on
the layer's own past at the horizon asked for (moetrace/predictors/inner.py) and keeps the
best one per layer:

* **drift rules**: the mean of the last 100 steps plus a damped, shrunk linear trend of the
  last 500 (shrink 0 .. 1, damping horizons 500 .. 2,000 steps; moetrace/predictors/drift.py):
  shrink 0 is the plain 100-step mean, the others follow the drift that real training shows.
  In a layer the detector calls stable, neither window reaches back before the stable onset
  (the 1,000-step window of ``sw_avg`` averages transient shares for hundreds of steps after
  a layer settles);
* **long window means** (500, 1,000, 2,000 steps) for transient layers only: they smooth
  the transient's swings.

Inner origins that lie before a stable layer's onset are not used for it (its transient past
says nothing about its stable present).

The same inner evaluation calibrates what the forecast is worth: per horizon, forecast
intervals of every expert's mean share over the horizon (split-conformal from the chosen
rule's past residuals, default 80%) and the layer's expected error rate (the chosen rule's
mean per-step error at the inner origins). Nothing after the origin is used.
"""

from __future__ import annotations

import numpy as np

from moetrace.defaults import HORIZON
from moetrace.predictors.base import Uncertainty
from moetrace.predictors.drift import choose, drift_grid
from moetrace.predictors.inner import (
    Rule,
    conformal_interval,
    expected_error,
    inner_origins,
    mean_residuals,
    valid_origins,
)
from moetrace.predictors.template import BucketPredictor, HistoryMark
from moetrace.states.online import OnlineDetector
from moetrace.trace.shares import Loads

DEFAULT_BUCKET = 20
#: window means a transient layer may use (training steps)
TRANSIENT_WINDOWS: tuple[int, ...] = ()
#: coverage of the forecast intervals: the 10th and 90th percentile of the mean share
LEVEL = 0.8
#: inner origins (the most recent ones) the intervals and the expected error come from
CALIBRATION_ORIGINS = 4
#: (steps x layers x experts) the online detector is fed at a time: its windows of one block
#: take about 100 bytes a cell, so a history of 100,000 steps is not one 2 GB block
DETECTOR_CELLS = 1 << 20


def window_rule(window_b: int, start: np.ndarray | None) -> Rule:
    """Mean of the last ``window_b`` buckets (flat), never before bucket ``start[l]`` of
    layer l (where it became stable; -1 or None: no limit) once the origin is past it."""
    def rule(buckets: np.ndarray, k: int) -> np.ndarray:
        m = buckets.shape[1]
        first = np.full(buckets.shape[0], max(0, m - window_b))
        if start is not None:
            settled = (start >= 0) & (start < m)
            first = np.where(settled, np.maximum(first, start), first)
        first = np.minimum(first, m - 1)
        cum = np.concatenate([np.zeros_like(buckets[:, :1]), np.cumsum(buckets, axis=1)], axis=1)
        rows = np.arange(buckets.shape[0])
        level = (cum[:, m] - cum[rows, first]) / (m - first)[:, None]
        return np.repeat(level[:, None, :], k, axis=1)
    return rule


class AutoPredictor(BucketPredictor):
    """Per layer the best of the drift rules (bounded by the stable onset) and, in the
    transient, long window means."""

    name = "auto"
    #: each fit is a function of the history alone (the online detector, fed incrementally,
    #: labels as a fresh one fed the whole history does)
    stateful = False
    default_bucket = DEFAULT_BUCKET
    min_buckets = 2

    def __init__(self, options=None, **inputs):
        super().__init__(options, **inputs)
        self._detector: OnlineDetector | None = None
        self._seen: HistoryMark | None = None

    def _onsets(self, history: Loads) -> list[int | None]:
        """Stable onset per layer from the online detector, fed only new steps when this
        history extends the last one (a backtest's increasing origins cost one pass)."""
        grown = self._seen.growth(history) if self._seen is not None else None
        if self._detector is None or grown is None or history.interval != self._detector.interval:
            self._detector = OnlineDetector(history.n_layers, history.n_experts,
                                            interval=history.interval)
            new = slice(0, history.n_steps)
        else:
            new = slice(history.n_steps - grown, history.n_steps)
        block = max(1, DETECTOR_CELLS // max(1, history.n_layers * history.n_experts))
        for i in range(new.start, new.stop, block):  # blocks: memory bounded, labels alike
            j = min(new.stop, i + block)
            self._detector.update(history.steps[i:j], history.counts[:, i:j])
        self._seen = HistoryMark.of(history)
        return [layer.stable_from for layer in self._detector.layers]

    def _fit(self, buckets: np.ndarray, history: Loads) -> None:
        self.onsets = self._onsets(history)
        last, n = int(history.steps[-1]), buckets.shape[1]
        # the bucket each stable layer's windows may start from (-1: no limit)
        self._start = np.array([-1 if s is None else n - 1 - (last - s) // self.step_bucket
                                for s in self.onsets])
        drift = drift_grid(self.step_bucket, self._start)
        windows = [(f"window({w})", window_rule(max(1, w // self.step_bucket), None))
                   for w in TRANSIENT_WINDOWS]
        self.candidates: list[tuple[str, Rule]] = drift + windows
        # long window means only for transient layers: they smooth its swings, but in a
        # stable layer they reach back before it settled
        allowed = np.ones((len(self.candidates), len(self._start)), dtype=bool)
        allowed[len(drift):] = self._start < 0
        horizons = self.options.horizons or (HORIZON,)
        self.choice, self.errors = choose(self.candidates, buckets, self._k(max(horizons)),
                                          fallback=0, start=self._start, allowed=allowed)
        self._buckets = buckets
        self._history = history
        self.intervals = {int(h): self._interval(h) for h in horizons}

    def _k(self, horizon: int) -> int:
        return max(1, -(-int(horizon) // self.step_bucket))

    def _rule(self) -> Rule:
        """The chosen rule of every layer as one rule (layers grouped by their choice)."""
        def rule(buckets: np.ndarray, k: int) -> np.ndarray:
            out = np.empty((buckets.shape[0], k, buckets.shape[2]))
            for c in np.unique(self.choice):
                layers = self.choice == c
                out[layers] = self._layer_rule(c, layers)(buckets[layers], k)
            return out
        return rule

    def _layer_rule(self, c: int, layers: np.ndarray) -> Rule:
        """Candidate c restricted to ``layers`` (drift rules carry per-layer onsets)."""
        name = self.candidates[c][0]
        if name.startswith("drift("):
            restricted = drift_grid(self.step_bucket, self._start[layers])
            return dict(restricted)[name]
        return self.candidates[c][1]

    def uncertainty(self, horizon: int) -> Uncertainty | None:
        """Intervals and expected error at one of ``options.horizons`` (None: no inner origin
        fitted in the history)."""
        return self.intervals.get(int(horizon))

    def _interval(self, horizon: int) -> Uncertainty | None:
        k = self._k(horizon)
        origins = inner_origins(self._buckets.shape[1], k)
        if len(origins) == 0:
            return None
        valid = valid_origins(origins, self._start)
        # calibrate on the most recent valid origins only: the errors of the layer's
        # distant past (another phase of training) overstate or understate today's
        valid &= np.cumsum(valid, axis=0) <= CALIBRATION_ORIGINS
        rule = self._rule()
        past_f, past_a = mean_residuals(rule, self._buckets, origins, k)
        past_a = np.where(valid[:, :, None], past_a, np.nan)  # only origins that speak for now
        forecast = rule(self._buckets, k).mean(axis=1)
        lower, upper = conformal_interval(forecast, past_f, past_a, LEVEL)
        error = expected_error(rule, self._history, self._buckets, origins, k, self.step_bucket,
                               valid)
        return Uncertainty(int(horizon), lower, upper, error, LEVEL)

    @property
    def chosen(self) -> list[str]:
        """The rule each layer uses, by name."""
        return [self.candidates[c][0] for c in self.choice]

    def _forecast_buckets(self, k: int) -> np.ndarray:
        return self._rule()(self._buckets, k)
