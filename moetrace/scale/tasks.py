"""The units of work: pure functions of (trace handle, layer chunk, settings).

Each opens the trace from its handle (no second validation pass), reads the dense counts of
its layers only, and runs the same library function a whole-trace run uses on them. They
are module-level functions of picklable arguments, so a process pool and Ray run them as
they are (moetrace/scale/executor.py).
"""

from __future__ import annotations

from typing import Any

from dataclasses import replace

from moetrace.trace.read import TraceHandle


def _own_layers(options, layers: list[int]):
    """Predictor options whose separate training trace (lstm) is cut to the chunk's layers."""
    train = getattr(options, "train", None)
    if train is None or train.n_layers == len(layers):
        return options
    return replace(options, train=train.select(layers))


def analyze_chunk(handle: TraceHandle, layers: list[int], options: dict[str, Any]):
    from moetrace.states import analyze_loads

    return analyze_loads(handle.open().loads(layers=layers), **options)


def backtest_chunk(handle: TraceHandle, layers: list[int], predictors: list, horizons: list,
                   options: dict[str, Any]):
    from moetrace.backtest import backtest

    if options.get("options") is not None:
        options = {**options, "options": _own_layers(options["options"], layers)}
    return backtest(handle.open().loads(layers=layers), predictors, horizons, **options)


def replay_chunk(handle: TraceHandle, layers: list[int], cluster, policies: list[str],
                 settings: dict[str, Any], options: dict[str, Any]):
    from moetrace.placement import make_policies, replay

    return replay(handle.open().loads(layers=layers), cluster,
                  make_policies(policies, **settings), **options)


def plan_chunk(handle: TraceHandle, layers: list[int], cluster, options: dict[str, Any]):
    from moetrace.placement.plan import plan_trace

    return plan_trace(handle.open().loads(layers=layers), cluster, **options)


def forecast_chunk(handle: TraceHandle, layers: list[int], predictors: list, horizon: int,
                   at: int | None, options):
    from moetrace.predictors.forecast import forecast_loads

    return forecast_loads(handle.open().loads(layers=layers), predictors, horizon, at,
                          None if options is None else _own_layers(options, layers))
