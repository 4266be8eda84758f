"""auto: per layer, the average of the rules that forecast this layer best on its own recent
history, with intervals calibrated on the same history.

At every fit, for every layer, ``auto`` asks the online detector (moetrace/states/online.py,
fed only the history, incrementally across successive fits) whether the layer is stable and
since when, then scores a set of cheap rules by an inner rolling-origin evaluation on the
layer's own past at each horizon asked for (moetrace/predictors/inner.py; a forecast for h
steps is made with the combination for the shortest asked horizon of at least h) and
averages the :data:`COMBINE` best (forecast combination: an average of a few good forecasts
is rarely far behind the best of them and often ahead, where picking one is at the mercy of
a few noisy inner origins):

* **drift rules**: the mean of the last 100 steps plus a damped, shrunk linear trend of the
  last 500 (shrink 0 .. 1, damping horizons 500 .. 2,000 steps; moetrace/predictors/drift.py):
  shrink 0 is the plain 100-step mean, the others follow the drift that real training shows;
* **window means** of 20 to 1,000 steps (:data:`WINDOWS`): the short ones follow a share that
  still moves (SmartMoE's real trace), the long ones average sampling noise away. A transient
  layer may use none longer than 100 steps (:func:`allowed`).

In a layer the detector calls stable, no window reaches back before the stable onset (the
1,000-step window of ``sw_avg`` averages transient shares for hundreds of steps after a layer
settles), and inner origins before the onset are not used for it (its transient past says
nothing about its stable present); a layer stable for less than a horizon is judged at the
longest of half, a quarter or an eighth of it that fits since its onset.

The same inner evaluation calibrates what the forecast is worth (:meth:`_interval`): per
horizon, intervals of every expert's mean share over the horizon (split-conformal from the
combination's own past residuals, scaled to how much the shares move now, default 80%) and
the layer's expected per-step error rate. Nothing after the origin is used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from moetrace.defaults import HORIZON
from moetrace.predictors.base import Uncertainty
from moetrace.predictors.buckets import n_buckets
from moetrace.predictors.drift import LEVEL_STEPS, drift_grid
from moetrace.predictors.inner import (
    Rule,
    binomial_scale,
    bounds,
    decay,
    evaluate,
    expected_step_error,
    inner_origins,
    mean_residuals,
    rule_scores,
    score_quantiles,
    valid_origins,
)
from moetrace.predictors.template import BucketPredictor, HistoryMark
from moetrace.states.online import OnlineDetector
from moetrace.trace.shares import Loads

DEFAULT_BUCKET = 20
#: window means a layer may use (training steps; a stable layer's stop at its onset)
WINDOWS: tuple[int, ...] = (20, 40, 60, 160, 240, 400, 600, 1000)
#: rules averaged per layer: those with the smallest inner error
COMBINE = 5
#: a stable layer without an inner origin a whole horizon after its onset is judged (and
#: calibrated) at the longest horizon / d, for d here, that has one
HORIZON_DIVISORS = (1, 2, 4, 8)
#: what a layer without any inner origin to judge by forecasts with: the mean of these.
#: A transient layer with no inner origin a whole horizon back is one (judged on its
#: transient past at a shorter horizon, the rules that win lag once it settles, which the
#: online detector confirms only hundreds of steps later).
FALLBACK = ("window(40)", "window(60)")
#: coverage of the forecast intervals: the 10th and 90th percentile of the mean share
LEVEL = 0.8
#: valid inner origins (the most recent ones) the intervals and the expected error come from
CALIBRATION_ORIGINS = 8
#: residuals at a shorter inner horizon kk (a young stable layer) are scaled by
#: (horizon / kk) ** this: the square root, as the error of a random walk's mean grows
HORIZON_POWER = 0.5
#: steps of the recent history the expected error's step-to-step scatter is taken from
RECENT_ROWS = 256
#: (steps x layers x experts) the online detector is fed at a time: its windows of one block
#: take about 100 bytes a cell, so a history of 100,000 steps is not one 2 GB block
DETECTOR_CELLS = 1 << 20


def window_rule(window_b: int, start: np.ndarray | None) -> Rule:
    """Mean of the last ``window_b`` buckets (flat), never before bucket ``start[l]`` of
    layer l (where it became stable; -1 or None: no limit) once the origin is past it.
    Only the last ``window_b`` buckets are read, so a call costs the window, not the history
    (the replay re-plans with auto every interval of a 100,000-step trace)."""
    def rule(buckets: np.ndarray, k: int) -> np.ndarray:
        m = buckets.shape[1]
        first = np.full(buckets.shape[0], max(0, m - window_b))
        if start is not None:
            settled = (start >= 0) & (start < m)
            first = np.where(settled, np.maximum(first, start), first)
        first = np.minimum(first, m - 1)
        lo = int(first.min())  # >= m - window_b: the window's buckets and none before
        inside = np.arange(lo, m)[None, :, None] >= first[:, None, None]
        # a running sum from each layer's first bucket (zeros before it add nothing), so two
        # windows that start at the same bucket give the same level to the last bit and tie
        # exactly in the ranking (moetrace.predictors.inner), whatever their length
        total = np.cumsum(np.where(inside, buckets[:, lo:], 0.0), axis=1)[:, -1]
        level = total / (m - first)[:, None]
        return np.repeat(level[:, None, :], k, axis=1)
    return rule


def candidates(bucket: int, start: np.ndarray) -> list[tuple[str, Rule]]:
    """auto's rules at this bucket size for layers whose stable windows start at bucket
    ``start`` (-1: transient): the drift rules, then the window means of :data:`WINDOWS`
    (one per distinct number of buckets, the drift rules' 100-step level excluded)."""
    out = drift_grid(bucket, start)
    seen = {max(1, LEVEL_STEPS // bucket)}
    for w in WINDOWS:
        b = max(1, w // bucket)
        if b not in seen:
            seen.add(b)
            out.append((f"window({b * bucket})", window_rule(b, start)))
    return out


def allowed(names: list[str], bucket: int, start: np.ndarray) -> np.ndarray:
    """(C, L) which candidates a layer may use: a transient layer (start -1) no window
    longer than the drift rules' level (:data:`LEVEL_STEPS`). Judged on its transient past,
    long windows smooth the swings best, and then lag for hundreds of steps once the layer
    settles, before the online detector confirms it (on the 125M sample: 3.76% error against
    a damped trend's 1.40% at the first stable origin)."""
    out = np.ones((len(names), len(start)), dtype=bool)
    for c, name in enumerate(names):
        if name.startswith("window(") and int(name[7:-1]) > max(bucket, LEVEL_STEPS):
            out[c] = start >= 0
    return out


def combine(make: Callable[[np.ndarray], list[tuple[str, Rule]]], buckets: np.ndarray,
            k: int, start: np.ndarray, bucket: int,
            count: int = COMBINE) -> tuple[np.ndarray, np.ndarray]:
    """(C, L) weights of the candidates ``make(start)`` and the (C, L) inner scores they were
    ranked by. Per layer, equal weights on the ``count`` allowed candidates with the smallest
    inner score (inner.rule_scores) over the inner origins valid for the layer, at the
    horizon of k buckets or, for a stable layer without such an origin, the longest of k / d
    (:data:`HORIZON_DIVISORS`) with one; a layer without any: :data:`FALLBACK`."""
    n_layers = buckets.shape[0]
    names = [name for name, _ in make(start)]
    usable = allowed(names, bucket, start)
    score = np.full((len(names), n_layers), np.nan)
    todo = np.ones(n_layers, dtype=bool)
    for kk in sorted({max(1, k // d) for d in HORIZON_DIVISORS}, reverse=True):
        if kk < k:
            todo &= start >= 0  # shorter horizons only for stable layers (see FALLBACK)
        origins = inner_origins(buckets.shape[1], kk)
        if len(origins) == 0 or not todo.any():
            continue
        valid = valid_origins(origins, start[todo])
        if not valid.any():
            continue
        errors = evaluate([rule for _, rule in make(start[todo])], buckets[todo], origins,
                          kk)[0]
        part = rule_scores(errors, valid)  # (C, layers to do)
        judged = ~np.isnan(part).any(axis=0)
        rows = np.flatnonzero(todo)[judged]
        score[:, rows] = np.where(usable[:, rows], part[:, judged], np.inf)
        todo[rows] = False
    weights = np.zeros_like(score)
    known = ~np.isnan(score).any(axis=0)
    top = np.argsort(np.nan_to_num(score, nan=np.inf), axis=0, kind="stable")[:count]
    layers = np.flatnonzero(known)
    for c in top:
        weights[c[layers], layers] = 1.0 / len(top)
    fallback = [names.index(name) for name in FALLBACK if name in names] or [0]
    weights[np.ix_(fallback, np.flatnonzero(~known))] = 1.0 / len(fallback)
    return weights, score


class AutoPredictor(BucketPredictor):
    """Per layer the average of the rules that forecast it best on its own recent history
    (drift rules and window means, bounded by the stable onset), with calibrated intervals."""

    name = "auto"
    #: each fit is a function of the history alone (the online detector, fed incrementally,
    #: labels as a fresh one fed the whole history does)
    stateful = False
    tuned = True  # a combination per asked horizon (moetrace.predictors.template)
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
        # the first bucket wholly at or after each stable layer's onset, where its windows
        # may start (-1: transient, no limit; 0 for an onset before the first whole bucket)
        self._start = np.array([-1 if s is None else max(0, n - (last - s + 1) //
                                                           self.step_bucket)
                                for s in self.onsets])
        self._buckets, self._history = buckets, history
        self.candidates = self._make(self._start)
        #: per tuning (buckets): the (C, L) weights and the inner scores they come from
        self.combinations = {k: combine(self._make, buckets, k, self._start, self.step_bucket)
                             for k in self.tunings()}
        self.intervals = {int(h): self._interval(h)
                          for h in self.options.horizons or (HORIZON,)}

    def _make(self, start: np.ndarray) -> list[tuple[str, Rule]]:
        return candidates(self.step_bucket, start)

    @property
    def weights(self) -> np.ndarray:
        """(C, L) the combination's weights at the longest asked horizon."""
        return self.combinations[self.tunings()[-1]][0]

    @property
    def errors(self) -> np.ndarray:
        """(C, L) the inner scores those weights come from."""
        return self.combinations[self.tunings()[-1]][1]

    def _rule(self, k: int, layers: np.ndarray | None = None) -> Rule:
        """The combination that forecasts ``k`` buckets (:meth:`tuning`) of ``layers`` (bool,
        default all) as one rule: the weighted sum of the candidates any of them uses."""
        layers = np.ones(len(self._start), dtype=bool) if layers is None else layers
        weights = self.combinations[self.tuning(k)][0][:, layers]
        rules = self._make(self._start[layers])
        active = np.flatnonzero(weights.any(axis=1))

        def rule(buckets: np.ndarray, k: int) -> np.ndarray:
            out = np.zeros((buckets.shape[0], k, buckets.shape[2]))
            for c in active:
                out += weights[c][:, None, None] * rules[c][1](buckets, k)
            return out
        return rule

    def uncertainty(self, horizon: int) -> Uncertainty | None:
        """Intervals and expected error at one of ``options.horizons`` (None: the history
        holds no inner origin to calibrate from)."""
        return self.intervals.get(int(horizon))

    def _interval(self, horizon: int) -> Uncertainty | None:
        """Bounds of every expert's mean share over ``horizon`` around the forecast (the
        combination's for the horizon, averaged over it) and each layer's expected per-step
        error rate.

        Split-conformal from the combination's residuals at the layer's most recent valid
        inner origins (:data:`CALIBRATION_ORIGINS`), at the horizon or, for a layer without
        such an origin, at the longest horizon / d (:data:`HORIZON_DIVISORS`) with one,
        scaled up by (horizon / that) ** :data:`HORIZON_POWER`; a layer with none at all
        (stable for a bucket or two) takes its residuals at every inner origin. Each
        residual is scaled by how much more (or less) the shares move now than they did
        at its origin (inner.decay). The scores are the residuals on the binomial scale,
        pooled over the layer's experts and origins, and the bounds their 10th and 90th
        percentiles (inner.score_quantiles). A layer with no residual at all gets NaN
        bounds (too little history; a backtest counts it as not covered)."""
        k = n_buckets(int(horizon), self.step_bucket)
        buckets, start = self._buckets, self._start
        n_layers, n, n_experts = buckets.shape
        forecast = self._rule(k)(buckets, k).mean(axis=1)  # (L, E)
        lo, hi = np.full(n_layers, np.nan), np.full(n_layers, np.nan)
        residuals = np.full((CALIBRATION_ORIGINS, n_layers, n_experts), np.nan)
        todo = np.ones(n_layers, dtype=bool)
        tried = False
        for strict in (True, False):
            for kk in sorted({max(1, k // d) for d in HORIZON_DIVISORS}, reverse=True):
                origins = inner_origins(n, kk)
                if len(origins) == 0 or not todo.any():
                    continue
                tried = True
                valid = (valid_origins(origins, start if strict else None) &
                         todo[None, :])
                valid &= np.cumsum(valid, axis=0) <= CALIBRATION_ORIGINS  # the newest
                layers = valid.any(axis=0)
                if not layers.any():
                    continue
                past_f, past_a = mean_residuals(self._rule(k, layers), buckets[layers],
                                                origins, kk)
                scale = (k / kk) ** HORIZON_POWER * decay(buckets, origins, max(1, kk // 4),
                                                          start)
                errors = np.where(valid[:, layers, None], past_a - past_f, np.nan) * \
                    scale[:, layers, None]  # (O, layers, E), share units
                scores = (errors / binomial_scale(past_f)).transpose(1, 0, 2)
                lo[layers], hi[layers] = score_quantiles(scores.reshape(len(scores), -1),
                                                         LEVEL)
                rank = np.cumsum(valid[:, layers], axis=0) - 1  # newest first
                where = np.flatnonzero(layers)
                for o, j in zip(*np.nonzero(valid[:, layers])):
                    residuals[rank[o, j], where[j]] = errors[o, j]
                todo &= ~layers
        if not tried:
            return None  # not one inner origin: nothing to calibrate from
        lower, upper = bounds(forecast, lo, hi)
        return Uncertainty(int(horizon), lower, upper,
                           expected_step_error(residuals, self._recent(horizon)), LEVEL)

    def _recent(self, horizon: int) -> np.ndarray:
        """(L, R, E) how a step's shares scatter around the level they are forecast by: the
        last ``horizon`` steps of the history (for a stable layer none before its onset),
        each minus the mean of its block of :data:`LEVEL_STEPS` (so the slow swings of a
        transient that has just ended do not count), :data:`RECENT_ROWS` of them evenly
        spaced."""
        history = self._history
        block = min(history.samples(LEVEL_STEPS), history.n_steps)
        rows = max(block, history.samples(horizon) // block * block)
        out = np.empty((history.n_layers, RECENT_ROWS, history.n_experts))
        for layer, onset in enumerate(self.onsets):
            take = min(rows, history.n_steps // block * block)
            if onset is not None:
                since = history.n_steps - int(np.searchsorted(history.steps, onset))
                take = min(take, max(block, since // block * block))
            blocks = history.shares[layer, history.n_steps - take:].reshape(
                -1, block, history.n_experts)
            scatter = (blocks - blocks.mean(axis=1, keepdims=True)).reshape(
                -1, history.n_experts)
            out[layer] = scatter[np.linspace(0, len(scatter) - 1, RECENT_ROWS).astype(int)]
        return out

    @property
    def chosen(self) -> list[str]:
        """The rules each layer averages at the longest asked horizon, by name ("+" between
        them)."""
        return ["+".join(self.candidates[c][0] for c in np.flatnonzero(self.weights[:, layer]))
                for layer in range(self.weights.shape[1])]

    def _forecast_buckets(self, k: int) -> np.ndarray:
        return self._rule(k)(self._buckets, k)
