"""Whole-trace work done a chunk of layers at a time, on any executor.

Each function here splits a validated trace into layer chunks that fit the memory budget
(moetrace/scale/chunks.py), runs the chunk task (moetrace/scale/tasks.py) on the executor
(moetrace/scale/executor.py) and joins the chunks' results with the result type's own
``merge``. A trace that fits in one chunk runs in this process exactly as before; per-layer
methods give the same numbers chunked or not (tested), the LSTM aside (one model per chunk).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from moetrace.scale.chunks import layer_chunks
from moetrace.scale.executor import Executor, Local, make_executor
from moetrace.scale import tasks
from moetrace.trace.read import Trace


@dataclass(frozen=True)
class Chunked:
    """How one trace is worked on: its handle, chunks of layer positions and the executor."""

    trace: Trace
    chunks: list[list[int]]
    executor: Executor

    @property
    def in_process(self) -> bool:
        """Tasks run here, one after another: callbacks (progress) may go into them."""
        return len(self.chunks) == 1 or (isinstance(self.executor, Local)
                                         and self.executor.workers <= 1)

    def run(self, fn: Callable, per_chunk: Callable[[list[int]], tuple],
            done: Callable[[int, int], None] | None = None) -> list:
        """``fn(handle, chunk, *per_chunk(chunk))`` for every chunk, in order; ``done(chunks
        finished, chunks)`` as chunks finish, when they run elsewhere (in-process tasks get
        the caller's own progress through ``per_chunk``)."""
        handle = self.trace.handle()
        work = [(handle, chunk, *per_chunk(chunk)) for chunk in self.chunks]
        return self.executor.map(fn, work, done=None if self.in_process else done)


def chunked(trace: Trace, work: str, executor: Executor | None = None,
            memory: int | None = None) -> Chunked:
    return Chunked(trace, layer_chunks(trace.n_layers, trace.n_steps, trace.n_experts, work,
                                       memory), executor or make_executor())


def _rows(labels: np.ndarray | None, chunk: list[int]) -> np.ndarray | None:
    return None if labels is None else labels[chunk]


def analyze(trace: Trace, *, executor: Executor | None = None, memory: int | None = None,
            progress: Callable[[int, int], None] | None = None, **options: Any):
    """``states.analyze_loads`` over every layer of ``trace``, a chunk at a time."""
    from moetrace.states.analysis import Analysis

    plan = chunked(trace, "analyze", executor, memory)

    def per_chunk(chunk):
        if plan.in_process and progress is not None:  # layers done so far, over all chunks
            first = chunk[0]
            return ({**options, "progress": lambda done, total: progress(first + done,
                                                                         trace.n_layers)},)
        return (options,)

    return Analysis.merge(plan.run(tasks.analyze_chunk, per_chunk, progress))


def backtest(trace: Trace, predictors: list, horizons: list[int], *,
             executor: Executor | None = None, memory: int | None = None,
             stable: np.ndarray | None = None, progress: Callable | None = None,
             **options: Any):
    """``backtest.backtest`` over every layer of ``trace``, a chunk at a time, at the same
    origins (chosen once from the trace's steps)."""
    from moetrace.backtest import BacktestResult, choose_origins
    from moetrace.defaults import MIN_HISTORY

    if options.get("origins") is None:
        options["origins"] = choose_origins(
            trace.steps, sorted({int(h) for h in horizons}),
            min_history=options.pop("min_history", MIN_HISTORY),
            stride=options.pop("stride", None), n_origins=options.pop("n_origins", None))
    for key in ("min_history", "stride", "n_origins"):
        options.pop(key, None)
    plan = chunked(trace, "backtest", executor, memory)
    inner = options.get("options")
    if not plan.in_process and inner is not None:  # callbacks do not cross processes
        options["options"] = replace(inner, progress=None)

    def per_chunk(chunk):
        own = {**options, "stable": _rows(stable, chunk)}
        if plan.in_process:
            own["progress"] = progress
        return (predictors, horizons, own)

    return BacktestResult.merge(plan.run(
        tasks.backtest_chunk, per_chunk, None if progress is None else
        (lambda done, total: progress(done, total, "backtest: layer chunks"))))


def replay(trace: Trace, cluster, policies: list[str], settings: dict[str, Any], *,
           executor: Executor | None = None, memory: int | None = None,
           stable: np.ndarray | None = None, online_stable: np.ndarray | None = None,
           progress: Callable | None = None, **options: Any):
    """``placement.replay`` over every layer of ``trace``, a chunk at a time."""
    from moetrace.placement.replay import PlacementReplay

    plan = chunked(trace, "replay", executor, memory)

    def per_chunk(chunk):
        own = {**options, "stable": _rows(stable, chunk),
               "online_stable": _rows(online_stable, chunk)}
        if plan.in_process:
            own["progress"] = progress
        return (cluster, policies, settings, own)

    return PlacementReplay.merge(plan.run(
        tasks.replay_chunk, per_chunk, None if progress is None else
        (lambda done, total: progress("layer chunks", done, total))))


def plan(trace: Trace, cluster, *, executor: Executor | None = None,
         memory: int | None = None, **options: Any):
    """``placement.plan.plan_trace`` over every layer of ``trace``, a chunk at a time."""
    from moetrace.placement.plan import PlacementPlan

    work = chunked(trace, "forecast", executor, memory)
    return PlacementPlan.merge(work.run(tasks.plan_chunk, lambda chunk: (cluster, options)))


def forecast(trace: Trace, predictors, horizon: int, at: int | None, options, *,
             executor: Executor | None = None, memory: int | None = None):
    """``predictors.forecast.forecast_loads`` over every layer, a chunk at a time."""
    from moetrace.predictors.forecast import Forecasts

    work = chunked(trace, "forecast", executor, memory)
    progress = getattr(options, "progress", None)
    if not work.in_process and options is not None:
        options = replace(options, progress=None)
    return Forecasts.merge(work.run(
        tasks.forecast_chunk, lambda chunk: (predictors, horizon, at, options),
        None if progress is None else (lambda d, t: progress("layer chunks", d, t))))
