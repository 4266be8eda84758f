"""The rolling-origin backtest engine: one function for every predictor, horizon and report.

For each origin t (the last step a predictor may see) the engine fits the predictor on
``loads.upto(t)``, forecasts once with the largest horizon that fits in the trace, and scores
every horizon H on the prefix t+1 .. t+H against the actual shares (steps missing from the
trace are skipped). Settings are checked before any predictor runs.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from moetrace.defaults import LOOKAHEAD_RADIUS
from moetrace.defaults import MIN_HISTORY as DEFAULT_MIN_HISTORY
from moetrace.defaults import ORIGINS as DEFAULT_ORIGINS
from moetrace.errors import InternalError, ParameterError
from moetrace.evidence import estimate
from moetrace.metrics import (constant_bound, error_rate, held_steps, lookahead_forecast,
                              score)
from moetrace.predictors.base import Predictor, PredictorOptions, make_predictor
from moetrace.progress import Progress
from moetrace.trace.shares import Loads


@dataclass(frozen=True)
class Scores:
    """One predictor at one horizon: each metric as an (origins, layers) array.

    Rows of origins where the horizon does not fit in the trace are NaN (``fits`` is False).
    """

    fits: np.ndarray  # (N,) bool
    metrics: dict[str, np.ndarray]  # name -> (N, L) float; "zero_actuals" -> (N, L) counts
    steps_scored: np.ndarray  # (N,) actual steps present in t+1 .. t+H
    #: with ``keep_means``: each expert's mean forecast and mean actual share over the
    #: horizon, (N, L, E) each (NaN where not scored), what intervals are calibrated from
    means: tuple[np.ndarray, np.ndarray] | None = None
    #: for a predictor that states its uncertainty: (N, L, E) 1 where the expert's actual mean
    #: share over the horizon fell inside its interval, 0 where it fell outside or the
    #: forecast came without an interval, NaN where not scored (see :func:`_calibration`)
    inside: np.ndarray | None = None


@dataclass(frozen=True)
class Example:
    """Every predictor's forecast of one layer from one origin, kept for the report's figure."""

    origin: int
    layer: int  # position in ``loads.layers``
    steps: np.ndarray  # (H,) forecast step numbers origin+1 .. origin+H
    forecasts: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (H, E)


@dataclass(frozen=True)
class BacktestResult:
    """Scores of every predictor and horizon at every origin, with what they were made from."""

    origins: np.ndarray  # (N,) step numbers
    stable: np.ndarray | None  # (N, L) bool: each layer's state at each origin (None: unknown)
    layers: tuple[int, ...]
    horizons: tuple[int, ...]
    predictors: tuple[str, ...]
    scores: dict[tuple[str, int], Scores]
    seconds: dict[str, float]  # fit + forecast time per predictor
    example: Example | None
    min_history: int
    #: horizon -> (N, L) error rate of the look-ahead reference (metrics.lookahead_forecast)
    lookahead: dict[int, np.ndarray] = field(default_factory=dict)
    lookahead_radius: int = LOOKAHEAD_RADIUS  # in training steps
    #: predictor -> per origin, why it fell back to a simpler rule, or "not fitted: why" where
    #: the history was too short for it (that origin is then not scored); None: neither
    fallbacks: dict[str, list[str | None]] = field(default_factory=dict)
    #: horizon -> (N, L) the lowest error rate any forecast held constant over the horizon
    #: can score there (metrics.constant_bound)
    constant_bound: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def merge(cls, parts: list["BacktestResult"]) -> "BacktestResult":
        """One result over every layer from results over chunks of layers (same origins,
        predictors and horizons, in layer order): per-layer arrays are joined, the seconds
        added, the example taken from the first chunk."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        join = lambda arrays: np.concatenate(arrays, axis=1)  # noqa: E731
        scores = {key: Scores(s.fits, {m: join([p.scores[key].metrics[m] for p in parts])
                                       for m in s.metrics}, s.steps_scored,
                              inside=_join_inside([p.scores[key] for p in parts]))
                  for key, s in first.scores.items()}
        stable = (None if any(p.stable is None for p in parts)
                  else join([p.stable for p in parts]))
        fallbacks = {name: [next((p.fallbacks[name][i] for p in parts
                                  if p.fallbacks[name][i] is not None), None)
                            for i in range(len(reasons))]
                     for name, reasons in first.fallbacks.items()}
        return cls(first.origins, stable, tuple(x for p in parts for x in p.layers),
                   first.horizons, first.predictors, scores,
                   {name: sum(p.seconds[name] for p in parts) for name in first.seconds},
                   first.example, first.min_history,
                   {h: join([p.lookahead[h] for p in parts]) for h in first.lookahead},
                   first.lookahead_radius, fallbacks,
                   {h: join([p.constant_bound[h] for p in parts]) for h in first.constant_bound})

    def state_masks(self) -> dict[str, np.ndarray]:
        """(N, L) masks of the (origin, layer) pairs in each state: "all", and "transient" and
        "stable" where the states are known."""
        shape = (len(self.origins), len(self.layers))
        masks = {"all": np.ones(shape, dtype=bool)}
        if self.stable is not None:
            masks["transient"] = ~self.stable
            masks["stable"] = self.stable.copy()
        return masks

    def fell_back(self, name: str) -> np.ndarray:
        """(N,) whether ``name`` made no forecast of its own at each origin: it forecast with a
        simpler rule, or could not be fitted at all."""
        return np.array([reason is not None for reason in self.fallbacks.get(
            name, [None] * len(self.origins))], dtype=bool)

    def fallback_rate(self, name: str, cell: np.ndarray) -> float | None:
        """The share of the origins of ``cell`` (an (N, L) mask) at which ``name`` fell back
        (None: the cell has no origin)."""
        origins = np.asarray(cell, dtype=bool).any(axis=1)
        return float(self.fell_back(name)[origins].mean()) if origins.any() else None

    @classmethod
    def join(cls, parts: list["BacktestResult"], predictors: Sequence[str]) -> "BacktestResult":
        """One result over the same layers from results that split its ``predictors`` (given
        in the whole's order), its origins (runs of consecutive origins), or both, the
        look-ahead reference scored by some of them (the constant bound by each, over its own
        origins): the units smaller than a layer chunk that
        moetrace.pipeline runs (``merge`` then joins the layer chunks). Each origin's row
        comes from the part that scored it; the example is the whole's (the last origin the
        longest horizon fits, else the last), with every predictor's forecast from it."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        origins = np.unique(np.concatenate([p.origins for p in parts]))
        n, n_layers = len(origins), len(first.layers)
        at = [np.searchsorted(origins, p.origins) for p in parts]
        stable = None if any(p.stable is None for p in parts) else \
            np.zeros((n, n_layers), dtype=bool)
        scored = [p for p in parts if p.lookahead]
        lookahead = {h: np.full((n, n_layers), np.nan) for h in first.horizons} if scored \
            else {}
        bound = {h: np.full((n, n_layers), np.nan) for h in first.horizons}
        fits = {h: np.zeros(n, dtype=bool) for h in first.horizons}
        scores, fallbacks, seconds = {}, {}, {}
        for part, rows in zip(parts, at):
            if stable is not None:
                stable[rows] = part.stable
            for h, values in part.lookahead.items():
                lookahead[h][rows] = values
            for h, values in part.constant_bound.items():
                bound[h][rows] = values
            for (name, h), s in part.scores.items():
                fits[h][rows] = s.fits
                if (name, h) not in scores:
                    scores[(name, h)] = (np.zeros(n, dtype=bool),
                                         {m: np.full((n, n_layers), np.nan) for m in s.metrics},
                                         np.zeros(n, dtype=np.int64),
                                         None if s.means is None else tuple(
                                             np.full((n,) + x.shape[1:], np.nan)
                                             for x in s.means),
                                         None if s.inside is None else
                                         np.full((n,) + s.inside.shape[1:], np.nan))
                into = scores[(name, h)]
                into[0][rows] = s.fits
                for m, values in s.metrics.items():
                    into[1][m][rows] = values
                into[2][rows] = s.steps_scored
                if into[3] is not None and s.means is not None:
                    for target, values in zip(into[3], s.means):
                        target[rows] = values
                if into[4] is not None and s.inside is not None:
                    into[4][rows] = s.inside
            for name in part.predictors:
                seconds[name] = seconds.get(name, 0.0) + part.seconds[name]
                reasons = fallbacks.setdefault(name, [None] * n)
                for i, reason in zip(rows, part.fallbacks[name]):
                    reasons[i] = reason
        longest = fits[first.horizons[-1]]
        origin = int(origins[np.nonzero(longest)[0][-1]] if longest.any() else origins[-1])
        holders = [p.example for p in parts
                   if p.example is not None and p.example.origin == origin]
        names = tuple(predictors)
        example = None if not holders else Example(
            origin, holders[0].layer, holders[0].steps,
            {name: h.forecasts[name] for name in names for h in holders
             if name in h.forecasts})
        return cls(origins, stable, first.layers, first.horizons, names,
                   {(name, h): Scores(*scores[(name, h)]) for name in names
                    for h in first.horizons},
                   {name: seconds[name] for name in names}, example, first.min_history,
                   lookahead, scored[0].lookahead_radius if scored else first.lookahead_radius,
                   {name: fallbacks[name] for name in names}, bound)

    def summary(self):
        """A polars table: per predictor, horizon and state (all, transient, stable), the error
        rate's centre over the scored (origin, layer) pairs (the mean over origins of the mean
        over layers, moetrace.evidence) with its 95% interval (cut at 0), the constant bound
        and the look-ahead reference on the same pairs with the same centre, the origins and
        pairs, and the share of the origins at which the predictor fell back."""
        import polars as pl

        rows = []
        for (name, h), scores in self.scores.items():
            error = scores.metrics["error_rate"]
            for state, pairs in self.state_masks().items():
                cell = pairs & scores.fits[:, None]
                mask = cell & np.isfinite(error)
                if not mask.any():
                    continue
                found = estimate(error, mask, steps=self.origins, horizon=h, least=0.0)
                refs = {key: estimate(values[h], mask).centre if h in values else np.nan
                        for key, values in (("constant_bound", self.constant_bound),
                                            ("lookahead", self.lookahead))}
                rows.append({"predictor": name, "horizon": h, "state": state,
                             "error_rate": found.centre, "lower": found.lower,
                             "upper": found.upper, **refs, "origins": found.origins,
                             "pairs": found.pairs,
                             "fallback_rate": self.fallback_rate(name, cell)})
        return pl.DataFrame(rows, nan_to_null=True).sort("horizon", "state", "error_rate")


def choose_origins(steps: np.ndarray, horizons: Sequence[int], *, min_history: int,
                   stride: int | None = None, n_origins: int | None = None) -> np.ndarray:
    """Origin steps from the first with ``min_history`` training steps of history up to
    last - min(H).

    Origins are every ``stride`` steps, or ``n_origins`` spread evenly (default
    :data:`DEFAULT_ORIGINS`); each is snapped down to a step present in the trace. Every
    number here is in training steps, also on a sampled trace (each recorded step stands for
    the trace's sampling interval).
    """
    if stride is not None and n_origins is not None:
        raise ParameterError("give either --stride or --origins, not both")
    if stride is not None and stride <= 0:
        raise ParameterError(f"--stride must be a positive number of steps, got {stride}")
    if n_origins is not None and n_origins <= 0:
        raise ParameterError(f"--origins must be a positive count, got {n_origins}")
    if min_history <= 0:
        raise ParameterError(f"the minimum history must be at least 1 step, got {min_history}")
    axis = Loads.axis(steps)
    steps, interval = axis.steps, axis.interval
    shortest = min(horizons)
    if axis.span < min_history:
        samples = f" ({len(steps):,} samples, every {interval:,} steps)" if interval > 1 else ""
        raise ParameterError(f"the trace covers {axis.span:,} training steps{samples}; a "
                             f"backtest needs at least {min_history:,} steps of history before "
                             "its first origin (--min-history)")
    # the first step whose history (each sample standing for ``interval`` steps) is long enough
    at = axis.index(int(steps[0]) - interval + min_history - 1)
    first, last = int(steps[at]), int(steps[-1]) - shortest
    if first > last:
        raise ParameterError(
            f"the trace's steps {steps[0]}..{steps[-1]} are too short for a backtest: "
            f"{min_history} steps of history end at step {first}, and a {shortest}-step horizon "
            f"from there ends after the last step {steps[-1]}")
    if stride is not None:
        targets = np.arange(first, last + 1, stride)
    else:
        count = n_origins or DEFAULT_ORIGINS
        targets = np.unique(np.round(np.linspace(first, last, count)).astype(np.int64))
    return np.unique(axis.snap(targets))


def _predictor(spec: str | Predictor, options: PredictorOptions | None,
               train: Loads | None) -> Predictor:
    return make_predictor(spec, options, train=train) if isinstance(spec, str) else spec


def backtest(loads: Loads, predictors: Sequence[str | Predictor], horizons: Sequence[int], *,
             options: PredictorOptions | None = None, train: Loads | None = None,
             stable: np.ndarray | None = None,
             origins: Sequence[int] | None = None, stride: int | None = None,
             n_origins: int | None = None, min_history: int = DEFAULT_MIN_HISTORY,
             example_layer: int = 0, progress: Progress | None = None,
             lookahead_radius: int | None = LOOKAHEAD_RADIUS,
             keep_means: bool = False) -> BacktestResult:
    """Backtest each predictor (a registered name or a predictor object) at every origin.

    ``stable`` is an (L, T) bool array over ``loads.steps`` (True = stable) used to label each
    origin with its layers' states. ``train`` is a separate trace a learning predictor
    (lstm) trains on instead of the history. ``origins`` overrides the origin grid of
    :func:`choose_origins`. Each predictor is fitted on the same object at increasing origins.
    Beside the predictors, every origin and horizon gets the constant bound (the lowest error
    rate a forecast held constant over the horizon can score, metrics.constant_bound) and the
    look-ahead reference (``lookahead_radius`` training steps on either side, see
    metrics.lookahead_forecast; None: not scored). Each pair's ``constant`` metric (1 or 0)
    says whether the predictor's forecast there was held constant, so the bound binds it.
    ``keep_means`` keeps each expert's mean forecast and actual share over every horizon
    (``Scores.means``), which calibration (moetrace.calibrate) is made from.
    """
    horizons = tuple(sorted({int(h) for h in horizons}))
    if not horizons or horizons[0] <= 0:
        raise ParameterError(f"horizons must be positive numbers of steps, got {list(horizons)}")
    if not predictors:
        raise ParameterError("no predictors to backtest")
    if not 0 <= example_layer < loads.n_layers:
        raise ParameterError(f"no layer position {example_layer}: the loads hold "
                             f"{loads.n_layers} layers")
    steps = loads.steps
    if origins is None:
        grid = choose_origins(steps, horizons, min_history=min_history, stride=stride,
                              n_origins=n_origins)
    else:
        grid = _check_origins(np.asarray(origins, dtype=np.int64), steps, horizons)
    options = replace(options or PredictorOptions(), horizons=horizons)
    models = [_predictor(p, options, train) for p in predictors]
    names = tuple(m.name for m in models)
    if len(set(names)) != len(names):
        raise ParameterError(f"predictor names must be unique, got {', '.join(names)}")
    origin_stable = _origin_states(stable, loads, grid)

    last = int(steps[-1])
    shares = loads.shares
    n, n_layers = len(grid), loads.n_layers
    metrics = {(name, h): _empty(n, n_layers) for name in names for h in horizons}
    scored = {(name, h): np.zeros(n, dtype=np.int64) for name in names for h in horizons}
    means = {key: (np.full((n, n_layers, loads.n_experts), np.nan),
                   np.full((n, n_layers, loads.n_experts), np.nan))
             for key in metrics} if keep_means else {}
    inside = {key: np.full((n, n_layers, loads.n_experts), np.nan) for key in metrics}
    fits = {h: grid + h <= last for h in horizons}
    example_at = int(np.nonzero(fits[horizons[-1]])[0][-1]) if fits[horizons[-1]].any() else n - 1
    example = Example(int(grid[example_at]), example_layer,
                      np.arange(grid[example_at] + 1, grid[example_at] + 1 + max(
                          h for h in horizons if fits[h][example_at])))
    seconds: dict[str, float] = {}
    fallbacks: dict[str, list[str | None]] = {name: [] for name in names}
    failed: dict[str, ParameterError] = {}
    total, done = len(models) * n, 0
    for model, name in zip(models, names):
        start = time.perf_counter()
        for i, t in enumerate(grid):
            t = int(t)
            reach = max(h for h in horizons if fits[h][i])
            try:
                forecast = np.asarray(model.fit(loads.upto(t)).forecast(reach))
            except ParameterError as exc:  # too little history at this origin: not scored
                fallbacks[name].append(f"not fitted: {exc}")
                failed.setdefault(name, exc)
                done += 1
                continue
            fallbacks[name].append(model.fallback)
            for h in horizons:
                if not fits[h][i]:
                    continue
                # the forecast made for this horizon: a predictor that tunes itself per
                # horizon (auto, drift) makes a shorter one with another tuning, not as
                # a prefix of the longest (moetrace.predictors.template)
                made = forecast if h == reach else np.asarray(model.forecast(h))
                _check_forecast(made, name, t, (n_layers, h, loads.n_experts))
                rows = loads.rows(t, t + h)
                ahead = steps[rows] - t - 1
                values = score(made[:, ahead], shares[:, rows])
                # 1 where every step is the same as the first
                values["constant"] = held_steps(made)[:, ahead].all(axis=1).astype(np.float64)
                stated = _calibration(model.uncertainty(h), shares[:, rows])
                if stated is not None:
                    inside[(name, h)][i] = stated.pop("inside")
                    values.update(stated)
                for key, value in values.items():
                    metrics[(name, h)][key][i] = value
                scored[(name, h)][i] = rows.stop - rows.start
                if keep_means:
                    means[(name, h)][0][i] = made[:, ahead].mean(axis=1)
                    means[(name, h)][1][i] = shares[:, rows].mean(axis=1)
            if i == example_at:
                example.forecasts[name] = forecast[example_layer].copy()
            done += 1
            if progress is not None:
                progress(done, total, f"{name} @ step {t}")
        seconds[name] = time.perf_counter() - start
    if failed and all(all(r and r.startswith("not fitted") for r in fallbacks[name])
                      for name in names):
        raise next(iter(failed.values()))  # no predictor at any origin: nothing to report
    scores = {key: Scores(fits[key[1]], metrics[key], scored[key], means.get(key),
                          _every_forecast(metrics[key], inside[key]))
              for key in metrics}
    bound, lookahead = _references(loads, grid, horizons, fits, None if lookahead_radius is None
                                   else loads.samples(lookahead_radius))
    return BacktestResult(grid, origin_stable, loads.layers, horizons, names, scores, seconds,
                          example, min_history, lookahead,
                          LOOKAHEAD_RADIUS if lookahead_radius is None else lookahead_radius,
                          fallbacks, bound)


def _join_inside(parts: list[Scores]) -> np.ndarray | None:
    """Per-expert coverage over chunks of layers; a chunk where the predictor stated none
    (its ``inside`` None) is NaN there."""
    known = [p.inside for p in parts if p.inside is not None]
    if not known:
        return None
    experts = known[0].shape[2]
    return np.concatenate([p.inside if p.inside is not None else
                           np.full(p.metrics["error_rate"].shape + (experts,), np.nan)
                           for p in parts], axis=1)


def _references(loads: Loads, grid: np.ndarray, horizons: tuple[int, ...],
                fits: dict[int, np.ndarray], radius: int | None
                ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per horizon, the (N, L) constant bound and (radius given) the look-ahead reference's
    error rate, NaN where the horizon does not fit."""
    bound = {h: np.full((len(grid), loads.n_layers), np.nan) for h in horizons}
    lookahead = {} if radius is None else {h: bound[h].copy() for h in horizons}
    for i, t in enumerate(grid):
        for h in horizons:
            if fits[h][i]:
                rows = loads.rows(int(t), int(t) + h)
                actual = loads.shares[:, rows]
                bound[h][i] = constant_bound(actual)
                if radius is not None:
                    f = lookahead_forecast(loads.shares, rows.start, rows.stop, radius)
                    lookahead[h][i] = error_rate(f, actual)
    return bound, lookahead


def _empty(n: int, n_layers: int) -> dict[str, np.ndarray]:
    names = ("error_rate", "mean_error_ratio", "window_error", "imbalance_error", "zero_actuals",
             "constant", "coverage", "stated", "expected_error")
    return {k: np.full((n, n_layers), np.nan) for k in names}


def _calibration(uncertainty, actual: np.ndarray) -> dict[str, np.ndarray] | None:
    """For a forecast whose predictor stated its uncertainty (None otherwise): per layer
    ``coverage``, the share of experts whose actual mean share over the horizon fell inside
    the interval; ``stated``, 1 where the layer had an interval and 0 where it had none (its
    bounds NaN: too little history to calibrate from), whose coverage is 0: a forecast
    without an interval covers nothing; ``expected_error``; and ``inside`` (L, E) per
    expert."""
    if uncertainty is None:
        return None
    mean = actual.mean(axis=1)  # (L, E)
    known = np.isfinite(uncertainty.lower).all(axis=1) & np.isfinite(uncertainty.upper).all(
        axis=1)
    inside = (mean >= uncertainty.lower) & (mean <= uncertainty.upper) & known[:, None]
    return {"coverage": inside.mean(axis=1), "stated": known.astype(np.float64),
            "expected_error": uncertainty.expected_error, "inside": inside.astype(np.float64)}


def _every_forecast(metrics: dict[str, np.ndarray], inside: np.ndarray) -> np.ndarray | None:
    """Coverage counts every forecast: a predictor that stated its uncertainty at any
    forecast of the backtest is held to all of them, so a scored (origin, layer) where it
    stated none (``uncertainty`` None: too little history) counts as stated 0 and covered 0,
    in ``metrics`` (updated in place) and the per-expert ``inside`` returned (None for a
    predictor that never states one: its coverage stays NaN)."""
    if np.isnan(metrics["stated"]).all():
        return None
    missing = np.isfinite(metrics["error_rate"]) & np.isnan(metrics["stated"])
    metrics["stated"][missing] = 0.0
    metrics["coverage"][missing] = 0.0
    inside[missing] = 0.0
    return inside


def _check_origins(grid: np.ndarray, steps: np.ndarray, horizons: tuple[int, ...]) -> np.ndarray:
    """Explicit origins must be increasing steps of the trace with room for the shortest horizon."""
    if grid.size == 0:
        raise ParameterError("no origins given")
    grid = np.unique(grid)
    missing = grid[~np.isin(grid, steps)]
    if missing.size:
        raise ParameterError(f"origin {missing[0]} is not a step of the trace")
    late = grid[grid + horizons[0] > steps[-1]]
    if late.size:
        raise ParameterError(f"origin {late[0]} leaves no room for a {horizons[0]}-step horizon "
                             f"before the last step {steps[-1]}")
    if grid[0] == steps[0]:
        raise ParameterError(f"origin {grid[0]} is the first step: a predictor needs history")
    return grid


def _origin_states(stable: np.ndarray | None, loads: Loads, grid: np.ndarray) -> np.ndarray | None:
    """Each layer's state at each origin as an (N, L) bool array."""
    if stable is None:
        return None
    stable = np.asarray(stable, dtype=bool)
    if stable.shape != (loads.n_layers, loads.n_steps):
        raise ParameterError(f"state labels have shape {stable.shape}, expected "
                             f"{(loads.n_layers, loads.n_steps)} (layers, steps)")
    return stable[:, loads.positions(grid)].T


def _check_forecast(forecast: np.ndarray, name: str, origin: int, shape: tuple) -> None:
    """A forecast of the wrong shape is a bug of the predictor, not bad input (exit 1)."""
    if forecast.shape != shape:
        raise InternalError(f"predictor '{name}' at origin {origin} forecast shape "
                            f"{forecast.shape}, expected {shape} (layers, horizon, experts)")


class _Module(types.ModuleType):
    """This module, callable as its :func:`backtest`: ``moetrace.backtest`` is the function
    of the public API, but once anything imports this module (``from moetrace.backtest
    import BacktestResult``) Python binds the name ``moetrace.backtest`` to the module, and
    ``moetrace.backtest(loads, ...)`` would stop working depending on what ran before."""

    def __call__(self, *args, **kwargs) -> BacktestResult:
        return backtest(*args, **kwargs)


sys.modules[__name__].__class__ = _Module
