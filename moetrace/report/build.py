"""``build_report``: analyze a trace, backtest the predictors, write the report directory.

The directory (report.json, report.md, report.html, figures/) is written atomically: it is
complete or absent, and an existing one is replaced only with ``force``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import moetrace
from moetrace.output import check_output, write_dir
from moetrace.backtest import DEFAULT_MIN_HISTORY, BacktestResult, Progress
from moetrace.defaults import HORIZONS, LOOKAHEAD_RADIUS, STATE_WINDOW
from moetrace.errors import ParameterError
from moetrace.placement import (DEFAULT_POLICIES, Cluster, PlacementReplay, default_cluster,
                                expert_parameters, make_policies)
from moetrace.scale import run
from moetrace.trace.shares import Loads
from moetrace.predictors.base import PredictorOptions, select_predictors
from moetrace.report import paper
from moetrace.report.document import report_blocks
from moetrace.report.figures import write_figures
from moetrace.report.html import render_html
from moetrace.report.markdown import render_markdown
from moetrace.report.results import SCHEMA_NAME, SCHEMA_VERSION, STATES, Row, summarize
from moetrace.report.verdict import bottom_line, notes
from moetrace.states import Analysis
from moetrace.trace import Trace, read_trace

DEFAULT_HORIZONS = HORIZONS
#: Predictors a report backtests when none are named (those whose extra is missing are left
#: out with a note): the state-aware default first, then the paper's three and naive.
DEFAULT_PREDICTORS = ("auto", "sw_avg", "arima", "lstm", "naive")


@dataclass(frozen=True)
class Fitted:
    """The horizons, minimum history and state window a report uses on this trace."""

    horizons: tuple[int, ...]
    min_history: int
    state_window: int
    notes: list[str]


def fit_to_trace(loads, horizons: Sequence[int] | None, min_history: int | None,
                 state_window: int | None) -> Fitted:
    """Defaults where the caller gave None, shrunk to a trace too short for them: the
    history to half the trace, the horizons to fit after it, the state window to a quarter
    of the trace (at least 2 samples). What was shrunk is said in ``notes``."""
    span, every = loads.span, loads.interval
    notes = []
    h = tuple(int(x) for x in (horizons or DEFAULT_HORIZONS))
    mh = DEFAULT_MIN_HISTORY if min_history is None else int(min_history)
    sw = STATE_WINDOW if state_window is None else int(state_window)
    # the longest horizon needs room after the history too, or it is silently never scored
    if min_history is None and mh + max(h) > span:
        mh = max(every, min(mh, span // 2))
        if mh != DEFAULT_MIN_HISTORY:
            notes.append(f"the trace covers {span:,} steps, too few for the default "
                         f"{DEFAULT_MIN_HISTORY:,} steps of history: {mh:,} were used")
    if horizons is None and mh + max(h) > span:
        room = max(every, span - mh)
        h = tuple(sorted({max(every, room // 2), room}))
        notes.append(f"horizons of {', '.join(f'{x:,}' for x in h)} steps were used instead "
                     f"of {', '.join(f'{x:,}' for x in DEFAULT_HORIZONS)}: errors over so few "
                     "steps say little about a placement held for thousands")
    if state_window is None and sw > span // 4:
        sw = max(2 * every, span // 4)
        notes.append(f"the state window was shrunk to {sw:,} steps: states found in a short "
                     "trace are uncertain")
    return Fitted(h, mh, sw, notes)


@dataclass(frozen=True)
class Report:
    """A written report: where it is, its JSON document and its result rows."""

    path: Path
    document: dict
    rows: list[Row]


def build_report(trace: str | Path, out: str | Path, *,
                 predictors: Sequence[str] | str | None = None,
                 horizons: Sequence[int] | None = None, stride: int | None = None,
                 n_origins: int | None = None, min_history: int | None = None,
                 options: PredictorOptions | None = None, train_trace: str | None = None,
                 force: bool = False, command: str = "", progress: Progress | None = None,
                 state_window: int | None = None, states: str = "hindsight",
                 lookahead_radius: int = LOOKAHEAD_RADIUS,
                 placement: Cluster | str | None = "default", executor=None) -> Report:
    """Backtest ``predictors`` on ``trace`` at ``horizons`` and write the report to ``out``.

    ``predictors`` as :func:`select_predictors` takes them (None: the default set).
    ``state_window`` is the window of the state analysis that labels each origin, ``states``
    which labels: ``hindsight`` (the segmentation of the whole trace, as the paper) or
    ``online`` (what a live job believed at the origin). Horizons, the minimum history and
    the state window left at None take their defaults, shrunk to fit a trace too short for
    them (with a note in the report saying so and what it means). ``placement`` is the
    cluster of the Placement section (``"default"``: :func:`default_cluster`; None: no
    section). The work runs a chunk of layers at a time on ``executor`` (moetrace.scale).
    """
    out = Path(out)
    inputs = [trace] + ([train_trace] if train_trace else [])
    check_output(out, kind="dir", inputs=inputs, force=force)  # before minutes of work
    selection = select_predictors(predictors, DEFAULT_PREDICTORS)
    if states not in ("hindsight", "online"):
        raise ParameterError(f"--states takes hindsight or online, got '{states}'")
    options = options or PredictorOptions()
    opened = read_trace(trace)
    if isinstance(placement, Cluster):
        placement.slots(opened.n_experts)  # a cluster that does not fit fails before the work
    fitted = fit_to_trace(Loads.axis(opened.steps), horizons, min_history, state_window)
    analysis = run.analyze(opened, executor=executor, window=fitted.state_window,
                           top_k=opened.metadata.top_k or 1, option="--state-window")
    result = run.backtest(opened, list(selection.names), fitted.horizons, executor=executor,
                          options=options, stable=analysis.labels(states), stride=stride,
                          n_origins=n_origins, min_history=fitted.min_history,
                          progress=progress, lookahead_radius=lookahead_radius)
    floors = noise_floors(analysis)
    rows = summarize(result, floors)
    placed, placement_note = _placement(opened, analysis.labels(states), analysis, placement,
                                        fitted, result.predictors[0], progress, executor)
    parameters = {
        "predictors": list(result.predictors), "horizons": list(result.horizons),
        "skipped": [{"predictor": n, "reason": r} for n, r in selection.skipped],
        "state_window": fitted.state_window, "states": states,
        "lookahead_radius": lookahead_radius, "shrunk": fitted.notes,
        "stride": stride, "n_origins": None if stride else (n_origins or len(result.origins)),
        "min_history": fitted.min_history, "window": options.window, "bucket": options.bucket,
        "order": list(options.order) if options.order else None, "seed": options.seed,
        "train_trace": train_trace, "command": command,
        "placement": None if placed is None else {"gpus": placed.cluster.gpus,
                                                  "replicas": placed.slots},
    }
    with write_dir(out, inputs=inputs, force=force, command=command) as tmp:
        example = opened.loads(layers=[result.layers[result.example.layer]]) \
            if result.example is not None else Loads.axis(opened.steps)
        figures = write_figures(tmp / "figures", result, example, rows,
                                stable_from=analysis.model_stable_from, floors=floors,
                                placement=placed)
        doc = report_document(opened, analysis, result, rows, parameters,
                              [{"file": f"figures/{f.name}", "caption": f.caption}
                               for f in figures])
        doc["placement"] = (None if placed is None else
                            {**placed.document(str(trace)), "skipped": None})
        if placed is None and placement_note:
            doc["placement"] = {"skipped": placement_note}
        (tmp / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
        blocks = report_blocks(doc)
        (tmp / "report.md").write_text(render_markdown(blocks))
        (tmp / "report.html").write_text(
            render_html(blocks, tmp, title=f"moetrace report: {Path(str(trace)).name}"))
    return Report(out, doc, rows)


def _placement(opened: Trace, labels: np.ndarray, analysis: Analysis, placement,
               fitted: Fitted, predictor: str, progress: Progress | None, executor
               ) -> tuple[PlacementReplay | None, str | None]:
    """Replay every placement policy for the report, re-planning every (first) horizon; a
    cluster or trace it cannot replay is skipped with the reason."""
    if placement is None:
        return None, None
    cluster = default_cluster(opened.n_experts) if placement == "default" else placement
    interval = min(fitted.horizons)
    try:
        make_policies(DEFAULT_POLICIES, window=interval, predictor=predictor)  # names check
        return run.replay(opened, cluster, list(DEFAULT_POLICIES),
                          {"window": interval, "predictor": predictor}, executor=executor,
                          stable=labels, online_stable=analysis.online_stable,
                          interval=interval, window=interval,
                          expert_params=expert_parameters(opened.metadata),
                          progress=None if progress is None else
                          (lambda task, done, total: progress(done, total,
                                                              f"placement: {task}"))), None
    except ParameterError as exc:
        if placement != "default":
            raise
        return None, f"not replayed: {exc}"


def noise_floors(analysis: Analysis) -> dict[str, np.ndarray]:
    """state -> (L,) per-step error-rate floor of each layer (NaN where the state is absent)."""
    return {state: np.array([layer.noise_floor[state].value if state in layer.noise_floor
                             else np.nan for layer in analysis.layers]) for state in STATES}


def report_document(trace: Trace, analysis: Analysis, result: BacktestResult, rows: list[Row],
                    parameters: dict, figures: list[dict]) -> dict:
    """The report.json document (schema: docs/report.md)."""
    steps = trace.steps
    slots = int(np.median(trace.step_totals.get_column("tokens").to_numpy()))
    tokens = trace.metadata.tokens_per_step or slots // (trace.metadata.top_k or 1)
    floors = noise_floors(analysis)
    calibration = [{"predictor": name, "horizon": h, "origin": int(t), "layer": layer,
                    "stable": bool(result.stable[i, j]),
                    "expected_error": float(m["expected_error"][i, j]),
                    "error_rate": float(m["error_rate"][i, j]),
                    "coverage": float(m["coverage"][i, j])}
                   for (name, h), s in result.scores.items() for m in (s.metrics,)
                   for i, t in enumerate(result.origins)
                   for j, layer in enumerate(result.layers)
                   if np.isfinite(m["expected_error"][i, j]) and np.isfinite(m["error_rate"][i, j])]
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "moetrace_version": moetrace.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "trace": {
            "path": trace.path, "model": trace.metadata.model, "n_layers": trace.n_layers,
            "n_experts": trace.n_experts, "top_k": trace.metadata.top_k,
            "tokens_per_step": int(tokens), "source": trace.metadata.source,
            "first_step": int(steps[0]), "last_step": int(steps[-1]), "n_steps": len(steps),
            "interval": trace.interval, "gaps": [list(g) for g in trace.gaps],
            "samples_per_horizon": {str(h): max(1, h // trace.interval)
                                    for h in result.horizons},
            "checksummed": trace.checksummed,
        },
        "bottom_line": bottom_line(result, rows, floors),
        "notes": notes(result, rows),
        "parameters": parameters,
        "states": {
            "window": analysis.window, "labels": parameters["states"],
            "model_stable_from": analysis.model_stable_from,
            "layers": [{
                "layer": layer.layer, "stable_from": layer.stable_from,
                "online_stable_from": layer.online_stable_from,
                "online_detected_at": layer.online_detected_at,
                "detection_delay": layer.detection_delay,
                "segments": [{"start": s.start, "end": s.end, "state": s.state}
                             for s in layer.segments],
                "noise_floor": {state: float(floors[state][i]) for state in STATES
                                if np.isfinite(floors[state][i])},
            } for i, layer in enumerate(analysis.layers)],
        },
        "origins": [{"step": int(t), "stable": [bool(v) for v in result.stable[i]]}
                    for i, t in enumerate(result.origins)],
        "results": [row.to_dict() for row in rows],
        "calibration": calibration,
        "fallbacks": {name: reasons for name, reasons in result.fallbacks.items()},
        "timings": {"backtest_seconds": {k: round(v, 3) for k, v in result.seconds.items()}},
        "paper": {"citation": paper.CITATION, "caveat": paper.CAVEAT,
                  "figures": [f.to_dict() for f in paper.FIGURES]},
        "figures": figures,
    }
