"""The units of work: pure functions of (trace handle, layer chunk, settings, per-chunk rows).

Each opens the trace from its handle (no second validation pass), reads the dense counts of
its layers only, and runs the same library function a whole-trace run uses on them. Settings
are frozen dataclasses and every argument is picklable, so a process pool and Ray run the
functions as they are (moetrace/scale/executor.py); ``progress`` is given only to a task that
runs in the calling process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moetrace.predictors.base import PredictorOptions
from moetrace.progress import Progress
from moetrace.trace.read import TraceHandle
from moetrace.trace.shares import Loads


@dataclass(frozen=True)
class AnalyzeSettings:
    """``states.analyze_loads``'s settings."""

    window: int
    sensitivity: float
    stable_ratio: float
    top_k: int
    option: str = "--state-window"  # names the window in error messages
    statistics: bool = True  # keep the per-step and per-window statistics (analyze --out)


@dataclass(frozen=True)
class BacktestSettings:
    """``backtest.backtest``'s settings, origins chosen once for every chunk."""

    predictors: tuple[str, ...]
    horizons: tuple[int, ...]
    origins: np.ndarray
    options: PredictorOptions
    lookahead_radius: int
    min_history: int
    train: Loads | None = None  # a separate training trace (lstm), every layer


@dataclass(frozen=True)
class ReplaySettings:
    """``placement.replay``'s settings: the cluster and the policy objects themselves."""

    cluster: Any
    policies: tuple[Any, ...]
    replan_interval: int
    load_window: int
    start: int | None
    time_model: Any  # moetrace.placement.timing.TimeModel


@dataclass(frozen=True)
class RecommendSettings:
    """``placement.recommend``'s settings."""

    cluster: Any
    grid: Any  # moetrace.placement.recommend.Grid
    predictor: str
    time_model: Any
    start: int | None


@dataclass(frozen=True)
class PlanSettings:
    """``placement.plan.plan_trace``'s settings."""

    cluster: Any
    source: str
    predictor: str
    at: int | None
    replan_interval: int
    load_window: int
    source_layers: list[int] | None


@dataclass(frozen=True)
class ForecastSettings:
    """``forecast.forecast_loads``'s settings."""

    predictors: tuple[str, ...]
    horizon: int
    at: int | None
    options: PredictorOptions
    train: Loads | None = None


def _train(train: Loads | None, layers: list[int]) -> Loads | None:
    """The separate training trace cut to the chunk's layers."""
    if train is None or train.n_layers == len(layers):
        return train
    return train.select(layers)


def analyze_chunk(handle: TraceHandle, layers: list[int], settings: AnalyzeSettings,
                  progress: Progress | None = None):
    from moetrace.states.analysis import analyze_loads

    return analyze_loads(handle.open().loads(layers=layers), window=settings.window,
                         sensitivity=settings.sensitivity, stable_ratio=settings.stable_ratio,
                         top_k=settings.top_k, option=settings.option, progress=progress,
                         statistics=settings.statistics)


def backtest_chunk(handle: TraceHandle, layers: list[int], settings: BacktestSettings,
                   stable: np.ndarray | None, progress: Progress | None = None):
    """The backtest of ``settings``' predictors at its origins (all of the report's, or a
    run of them) on the chunk's layers. Only the steps they reach are read: the histories,
    the longest horizon after the last origin, and the look-ahead bound's rows past it."""
    from moetrace.backtest import backtest

    trace = handle.open()
    stop = _last_row_needed(trace, settings)
    loads = trace.loads(layers=layers, stop=None if stop is None else int(trace.steps[stop]))
    if stop is not None:  # the trace's sampling interval, not that of the steps read
        loads.__dict__["interval"] = trace.interval
        stable = None if stable is None else stable[:, :loads.n_steps]
    return backtest(loads, list(settings.predictors), settings.horizons,
                    options=settings.options, stable=stable, origins=settings.origins,
                    min_history=settings.min_history,
                    lookahead_radius=settings.lookahead_radius,
                    train=_train(settings.train, layers), progress=progress)


def _last_row_needed(trace, settings: BacktestSettings) -> int | None:
    """The last row a backtest at ``settings.origins`` reads (None: the trace's last): one
    past the longest horizon after the last origin, and the look-ahead bound's radius past
    that, so that every horizon fits and every bound is what the whole trace gives."""
    axis = Loads.axis(trace.steps)
    axis.__dict__["interval"] = trace.interval
    end = axis.index(int(settings.origins[-1]) + max(settings.horizons))
    radius = 0 if settings.lookahead_radius is None else \
        axis.samples(settings.lookahead_radius)
    row = end + radius + 1
    return row if row < trace.n_steps - 1 else None


def replay_chunk(handle: TraceHandle, layers: list[int], settings: ReplaySettings,
                 stable: np.ndarray | None, online_stable: np.ndarray | None,
                 progress: Progress | None = None):
    from moetrace.placement import replay

    loads = handle.open().loads(layers=layers)
    # the shares once, here: every forecast estimate's history (a prefix of these loads) then
    # slices them, rather than dividing its whole history again at each re-plan (quadratic
    # in the steps: re-plans grow with the trace, and so do their histories)
    _ = loads.shares
    return replay(loads, settings.cluster,
                  list(settings.policies), interval=settings.replan_interval,
                  start=settings.start, window=settings.load_window, stable=stable,
                  online_stable=online_stable, time_model=settings.time_model,
                  progress=None if progress is None else
                  (lambda done, total, task: progress(done, total, f"placement: {task}")))


def recommend_chunk(handle: TraceHandle, layers: list[int], settings: RecommendSettings,
                    stable: np.ndarray | None, online_stable: np.ndarray | None,
                    progress: Progress | None = None):
    from moetrace.placement.recommend import recommend

    return recommend(handle.open().loads(layers=layers), settings.cluster, grid=settings.grid,
                     predictor=settings.predictor, time_model=settings.time_model,
                     stable=stable, online_stable=online_stable, start=settings.start,
                     progress=None if progress is None else
                     (lambda done, total, task: progress(done, total, f"recommend: {task}")))


def plan_chunk(handle: TraceHandle, layers: list[int], settings: PlanSettings,
               progress: Progress | None = None):
    from moetrace.placement.plan import plan_trace

    return plan_trace(handle.open().loads(layers=layers), settings.cluster,
                      source=settings.source, predictor=settings.predictor, at=settings.at,
                      interval=settings.replan_interval, window=settings.load_window,
                      source_layers=settings.source_layers)


def forecast_chunk(handle: TraceHandle, layers: list[int], settings: ForecastSettings,
                   progress: Progress | None = None):
    from moetrace.forecast import forecast_loads

    return forecast_loads(handle.open().loads(layers=layers), list(settings.predictors),
                          settings.horizon, settings.at, settings.options,
                          train=_train(settings.train, layers), progress=progress)
