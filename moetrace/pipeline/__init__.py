"""The one road from a trace to results: every command that reads a trace takes it.

Each function here reads and validates the trace once (:func:`open_trace`, or takes a
:class:`~moetrace.trace.Trace` already opened), decides once what depends on the trace (the
top-k of the noise floor, and through :mod:`moetrace.pipeline.span` the settings a short
trace shrinks, or the one line refusing it), runs the per-layer work a chunk of layers at a
time on the executor of its :class:`Execution`, and joins the chunks' results:

- :func:`analyze` -> :class:`~moetrace.states.Analysis` (``moetrace analyze``);
- :func:`forecast` -> :class:`~moetrace.forecast.Forecasts` (``predict``);
- :func:`backtest` -> :class:`Backtested`: the analysis, the backtest, the placement replay
  and the settings a report is written from (``report``; :func:`build_report` writes one);
- :func:`replay` -> :class:`~moetrace.placement.PlacementReplay` (``simulate``);
- :func:`plan` -> :class:`~moetrace.placement.plan.PlacementPlan` (``plan``).

Nothing here prints; writing an output is the caller's (the CLI's, through moetrace.output),
except :func:`build_report`, the library's one-call report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from moetrace.defaults import LOOKAHEAD_RADIUS, SENSITIVITY, STABLE_RATIO
from moetrace.errors import ParameterError
from moetrace.pipeline import span
from moetrace.pipeline.chunked import Chunked, Execution, layer_rows
from moetrace.predictors.base import PredictorOptions, select_predictors
from moetrace.scale import tasks
from moetrace.trace.read import Trace, read_trace
from moetrace.trace.shares import Loads

__all__ = ["Backtested", "Execution", "analyze", "backtest", "build_report", "forecast",
           "open_trace", "plan", "replay", "span"]

#: Predictors a report backtests when none are named (those whose extra is missing are left
#: out with a note): the state-aware default first, then the paper's three and naive.
REPORT_PREDICTORS = ("auto", "sw_avg", "arima", "lstm", "naive")
#: Predictors `predict` runs when none are named: the state-aware one (docs/predictors.md).
PREDICT_PREDICTORS = ("auto",)


def open_trace(trace: str | Path | Trace) -> Trace:
    """The validated trace at ``trace`` (read once; a Trace is taken as it is)."""
    return trace if isinstance(trace, Trace) else read_trace(trace)


def noise_top_k(trace: Trace, given: int | None = None) -> int:
    """Experts per token of the noise floor: ``given``, else the trace's metadata, else 1."""
    return int(given) if given is not None else int(trace.metadata.top_k or 1)


def axis(trace: Trace) -> Loads:
    """The trace's time axis (its steps, no counts)."""
    return Loads.axis(trace.steps)


def require_experts(trace: Trace, what: str) -> None:
    """Forecasting and placement need at least two experts per layer (with one, every share
    is 1 and every plan the same)."""
    if trace.n_experts < 2:
        raise ParameterError(f"{trace.path}: 1 expert per layer: there is nothing to {what} "
                             "(info and analyze describe such a trace)")


def analyze(trace: str | Path | Trace, *, window: int | None = None,
            sensitivity: float = SENSITIVITY, stable_ratio: float = STABLE_RATIO,
            top_k: int | None = None, run: Execution = Execution(),
            option: str = "--state-window", command: str = "analyze"):
    """Segment every layer into transient and stable states (moetrace.states), a chunk of
    layers at a time. ``window`` None: the default state window, shrunk for a short trace
    (the analysis's ``notes`` say so)."""
    from moetrace.states.analysis import Analysis

    trace = open_trace(trace)
    fitted = span.analysis(axis(trace), window, command=command, option=option)
    settings = tasks.AnalyzeSettings(fitted.state_window, sensitivity, stable_ratio,
                                     noise_top_k(trace, top_k), option)
    result = Analysis.merge(Chunked.of(trace, "analyze", run).run(
        tasks.analyze_chunk, settings, per_layer=True))
    result.notes = list(fitted.notes)
    return result


def forecast(trace: str | Path | Trace, predictors: Sequence[str] | str | None = None,
             horizon: int | None = None, at: int | None = None,
             options: PredictorOptions | None = None, *, train: Loads | None = None,
             run: Execution = Execution()):
    """Forecast every expert's share for the ``horizon`` steps after ``at`` (default: the
    last step) with each predictor (default: auto), a chunk of layers at a time."""
    from moetrace.defaults import HORIZON
    from moetrace.forecast import Forecasts

    selection = select_predictors(predictors, PREDICT_PREDICTORS)  # a bad name: before reading
    trace = open_trace(trace)
    require_experts(trace, "forecast")
    span.forecasting(axis(trace), command="predict")
    settings = tasks.ForecastSettings(selection.names, HORIZON if horizon is None
                                      else int(horizon), at,
                                      options or PredictorOptions(), train)
    result = Forecasts.merge(Chunked.of(trace, "forecast", run).run(
        tasks.forecast_chunk, settings, task="predict: layer chunks"))
    return replace(result, skipped=selection.skipped)


@dataclass(frozen=True)
class Backtested:
    """What a report is written from: the trace, its analysis, the backtest and its noise
    floors, the placement replay (None: left out, ``placement_note`` says why), the settings
    used (``span``: after the short-trace rule) and the example layer's loads the forecast
    figure draws."""

    trace: Trace
    analysis: object
    result: object
    floors: dict[str, np.ndarray]
    placement: object | None
    placement_note: str | None
    span: span.Span
    states: str
    lookahead_radius: int
    options: PredictorOptions
    skipped: tuple[tuple[str, str], ...]
    example: Loads
    stride: int | None = None  # the origins as asked for: every ``stride`` steps,
    n_origins: int | None = None  # or this many (None: the default count)


def backtest(trace: str | Path | Trace, *, predictors: Sequence[str] | str | None = None,
             horizons: Sequence[int] | None = None, stride: int | None = None,
             n_origins: int | None = None, min_history: int | None = None,
             options: PredictorOptions | None = None, train: Loads | None = None,
             state_window: int | None = None, states: str = "hindsight",
             lookahead_radius: int = LOOKAHEAD_RADIUS, placement="default",
             run: Execution = Execution()) -> Backtested:
    """Analyze the trace, backtest ``predictors`` at rolling origins and replay the placement
    policies on ``placement`` (a Cluster, ``"default"``: moetrace.placement.default_cluster,
    None: none): everything a report shows. Settings left at None take their defaults,
    shrunk to a short trace (moetrace.pipeline.span)."""
    from moetrace.backtest import BacktestResult, choose_origins
    from moetrace.placement import Cluster

    selection = select_predictors(predictors, REPORT_PREDICTORS)
    if states not in ("hindsight", "online"):
        raise ParameterError(f"--states takes hindsight or online, got '{states}'")
    options = options or PredictorOptions()
    trace = open_trace(trace)
    require_experts(trace, "forecast")
    if isinstance(placement, Cluster):
        placement.slots(trace.n_experts)  # a cluster that does not fit fails before the work
    fitted = span.backtest(axis(trace), horizons, min_history, state_window)
    analysis = analyze(trace, window=fitted.state_window, run=run, command="a backtest")
    labels = analysis.labels(states)
    origins = choose_origins(trace.steps, fitted.horizons, min_history=fitted.min_history,
                             stride=stride, n_origins=n_origins)
    settings = tasks.BacktestSettings(selection.names, fitted.horizons, origins,
                                      replace(options, horizons=fitted.horizons),
                                      lookahead_radius, fitted.min_history, train)
    result = BacktestResult.merge(Chunked.of(trace, "backtest", run).run(
        tasks.backtest_chunk, settings, layer_rows(labels), task="backtest: layer chunks"))
    placed, note = _report_placement(trace, analysis, labels, placement, fitted,
                                     result.predictors[0], run)
    example = (trace.loads(layers=[result.layers[result.example.layer]])
               if result.example is not None else axis(trace))
    return Backtested(trace, analysis, result, analysis.floors(), placed, note, fitted,
                      states, lookahead_radius, options, selection.skipped, example, stride,
                      n_origins)


def _report_placement(trace: Trace, analysis, labels: np.ndarray, placement,
                      fitted: span.Span, predictor: str, run: Execution):
    """Every placement policy replayed for the report, re-planning every (first) horizon; a
    cluster or trace it cannot replay is skipped with the reason (the default cluster only:
    a cluster the user gave that does not fit is an error)."""
    from moetrace.placement import DEFAULT_POLICIES, default_cluster, expert_parameters
    from moetrace.placement import make_policies

    if placement is None:
        return None, None
    cluster = default_cluster(trace.n_experts) if placement == "default" else placement
    interval = min(fitted.horizons)
    try:
        policies = make_policies(DEFAULT_POLICIES, window=interval, predictor=predictor)
        return _replay(trace, cluster, policies, analysis, labels, replan_interval=interval,
                       load_window=interval, start=None,
                       expert_params=expert_parameters(trace.metadata),
                       bytes_per_param=None, run=run), None
    except ParameterError as exc:
        if placement != "default":
            raise
        return None, f"not replayed: {exc}"


def _replay(trace: Trace, cluster, policies, analysis, labels, *, replan_interval: int,
            load_window: int, start: int | None, expert_params: int | None,
            bytes_per_param: int | None, run: Execution):
    from moetrace.defaults import BYTES_PER_PARAM
    from moetrace.placement.replay import PlacementReplay

    settings = tasks.ReplaySettings(cluster, tuple(policies), replan_interval, load_window,
                                    start, expert_params,
                                    BYTES_PER_PARAM if bytes_per_param is None
                                    else bytes_per_param)
    return PlacementReplay.merge(Chunked.of(trace, "replay", run).run(
        tasks.replay_chunk, settings, layer_rows(labels, analysis.online_stable),
        task="placement: layer chunks"))


def replay(trace: str | Path | Trace, cluster, policies: Sequence[str] | None = None, *,
           replan_interval: int | None = None, load_window: int | None = None,
           predictor: str = "auto", start: int | None = None, state_window: int | None = None,
           expert_params: int | None = None, bytes_per_param: int | None = None,
           run: Execution = Execution()):
    """Replay placement ``policies`` (names; default: all) over the trace on ``cluster``:
    the states are analyzed first (results by state, and the adaptive policy's online
    labels). The re-plan interval and the load window take their defaults, shrunk to a
    short trace (the replay's ``notes`` say so)."""
    from moetrace.placement import DEFAULT_POLICIES, expert_parameters, make_policies

    trace = open_trace(trace)
    require_experts(trace, "place")
    cluster.slots(trace.n_experts)  # a cluster that does not fit fails before any work
    fitted = span.replay(axis(trace), replan_interval, load_window, state_window)
    names = list(DEFAULT_POLICIES) if policies is None else list(policies)
    made = make_policies(names, window=fitted.load_window, predictor=predictor)
    if bytes_per_param is not None and bytes_per_param < 1:
        raise ParameterError(f"--bytes-per-param must be positive, got {bytes_per_param}")
    analysis = analyze(trace, window=fitted.state_window, run=run,
                       command="a placement replay")
    result = _replay(trace, cluster, made, analysis, analysis.stable,
                     replan_interval=fitted.replan_interval, load_window=fitted.load_window,
                     start=start, expert_params=expert_params or expert_parameters(
                         trace.metadata), bytes_per_param=bytes_per_param, run=run)
    result.notes[:0] = list(fitted.notes)
    return result


def plan(trace: str | Path | Trace, cluster, *, estimate: str = "forecast",
         predictor: str = "auto", at: int | None = None, replan_interval: int | None = None,
         load_window: int | None = None, run: Execution = Execution()):
    """The placement for the re-plan interval after ``at`` (default: the last step), planned
    from the ``estimate`` of its loads (forecast, window or oracle)."""
    from moetrace.defaults import LOAD_WINDOW, REPLAN_INTERVAL
    from moetrace.placement.plan import PlacementPlan

    trace = open_trace(trace)
    require_experts(trace, "place")
    cluster.slots(trace.n_experts)
    if estimate == "forecast":
        span.forecasting(axis(trace), command="a forecast plan")
    settings = tasks.PlanSettings(cluster, estimate, predictor, at,
                                  REPLAN_INTERVAL if replan_interval is None
                                  else replan_interval,
                                  LOAD_WINDOW if load_window is None else load_window,
                                  trace.metadata.extra.get("source_layers"))
    return PlacementPlan.merge(Chunked.of(trace, "forecast", run).run(
        tasks.plan_chunk, settings, task="plan: layer chunks"))


def build_report(trace: str | Path, out: str | Path, *, force: bool = False,
                 command: str = "", train_trace: str | Path | None = None,
                 progress=None, executor=None, **settings):
    """Backtest ``trace`` (see :func:`backtest` for ``settings``) and write the report
    directory ``out`` (report.json, report.md, report.html, figures/), atomically; the output
    is checked before any work (moetrace.output). ``train_trace``: a separate trace the lstm
    trains on. Returns the written :class:`~moetrace.report.Report`."""
    from moetrace.output import check_outputs
    from moetrace.report.write import write_report

    inputs = [trace] + ([train_trace] if train_trace else [])
    check_outputs([(out, "dir")], inputs=inputs, force=force)
    train = read_trace(train_trace).loads() if train_trace else None
    data = backtest(trace, train=train, run=Execution(executor, progress=progress),
                    **settings)
    return write_report(data, out, inputs=inputs, force=force, command=command,
                        train_trace=None if train_trace is None else str(train_trace))
