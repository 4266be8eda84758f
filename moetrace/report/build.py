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
from moetrace.backtest import DEFAULT_MIN_HISTORY, BacktestResult, Progress, backtest
from moetrace.defaults import HORIZONS, STATE_WINDOW
from moetrace.predictors.base import PredictorOptions, select_predictors
from moetrace.report import paper
from moetrace.report.document import report_blocks
from moetrace.report.figures import write_figures
from moetrace.report.html import render_html
from moetrace.report.markdown import render_markdown
from moetrace.report.results import SCHEMA_NAME, SCHEMA_VERSION, STATES, Row, summarize
from moetrace.states import Analysis, analyze_loads
from moetrace.trace import Trace, read_trace

DEFAULT_HORIZONS = HORIZONS
#: Predictors a report backtests when none are named (those whose extra is missing are left
#: out with a note).
DEFAULT_PREDICTORS = ("sw_avg", "arima", "lstm", "naive")


@dataclass(frozen=True)
class Report:
    """A written report: where it is, its JSON document and its result rows."""

    path: Path
    document: dict
    rows: list[Row]


def build_report(trace: str | Path, out: str | Path, *,
                 predictors: Sequence[str] | str | None = None,
                 horizons: Sequence[int] = DEFAULT_HORIZONS, stride: int | None = None,
                 n_origins: int | None = None, min_history: int = DEFAULT_MIN_HISTORY,
                 options: PredictorOptions | None = None, train_trace: str | None = None,
                 force: bool = False, command: str = "", progress: Progress | None = None,
                 state_window: int = STATE_WINDOW) -> Report:
    """Backtest ``predictors`` on ``trace`` at ``horizons`` and write the report to ``out``.

    ``predictors`` as :func:`select_predictors` takes them (None: the default set).
    ``state_window`` is the window of the state analysis that labels each origin.
    """
    out = Path(out)
    inputs = [trace] + ([train_trace] if train_trace else [])
    check_output(out, kind="dir", inputs=inputs, force=force)  # before minutes of work
    selection = select_predictors(predictors, DEFAULT_PREDICTORS)
    options = options or PredictorOptions()
    opened = read_trace(trace)
    loads = opened.loads()
    analysis = analyze_loads(loads, window=state_window, top_k=opened.metadata.top_k or 1,
                             option="--state-window")
    result = backtest(loads, list(selection.names), horizons, options=options,
                      stable=analysis.stable, stride=stride, n_origins=n_origins,
                      min_history=min_history, progress=progress)
    floors = noise_floors(analysis)
    rows = summarize(result, floors)
    parameters = {
        "predictors": list(result.predictors), "horizons": list(result.horizons),
        "skipped": [{"predictor": n, "reason": r} for n, r in selection.skipped],
        "state_window": state_window,
        "stride": stride, "n_origins": None if stride else (n_origins or len(result.origins)),
        "min_history": min_history, "window": options.window, "bucket": options.bucket,
        "order": list(options.order) if options.order else None, "seed": options.seed,
        "train_trace": train_trace, "command": command,
    }
    with write_dir(out, inputs=inputs, force=force, command=command) as tmp:
        figures = write_figures(tmp / "figures", result, loads, rows,
                                stable_from=analysis.model_stable_from, floors=floors)
        doc = report_document(opened, analysis, result, rows, parameters,
                              [{"file": f"figures/{f.name}", "caption": f.caption}
                               for f in figures])
        (tmp / "report.json").write_text(json.dumps(doc, indent=1) + "\n")
        blocks = report_blocks(doc)
        (tmp / "report.md").write_text(render_markdown(blocks))
        (tmp / "report.html").write_text(
            render_html(blocks, tmp, title=f"moetrace report: {Path(str(trace)).name}"))
    return Report(out, doc, rows)


def noise_floors(analysis: Analysis) -> dict[str, np.ndarray]:
    """state -> (L,) per-step error-rate floor of each layer (NaN where the state is absent)."""
    return {state: np.array([layer.noise_floor[state].value if state in layer.noise_floor
                             else np.nan for layer in analysis.layers]) for state in STATES}


def report_document(trace: Trace, analysis: Analysis, result: BacktestResult, rows: list[Row],
                    parameters: dict, figures: list[dict]) -> dict:
    """The report.json document (schema: docs/report.md)."""
    steps = trace.steps
    tokens = trace.metadata.tokens_per_step or int(np.median(
        trace.step_totals.get_column("tokens").to_numpy()))
    floors = noise_floors(analysis)
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
            "gaps": [list(g) for g in trace.gaps],
        },
        "parameters": parameters,
        "states": {
            "window": analysis.window,
            "model_stable_from": analysis.model_stable_from,
            "layers": [{
                "layer": layer.layer, "stable_from": layer.stable_from,
                "segments": [{"start": s.start, "end": s.end, "state": s.state}
                             for s in layer.segments],
                "noise_floor": {state: float(floors[state][i]) for state in STATES
                                if np.isfinite(floors[state][i])},
            } for i, layer in enumerate(analysis.layers)],
        },
        "origins": [{"step": int(t), "stable": [bool(v) for v in result.stable[i]]}
                    for i, t in enumerate(result.origins)],
        "results": [row.to_dict() for row in rows],
        "timings": {"backtest_seconds": {k: round(v, 3) for k, v in result.seconds.items()}},
        "paper": {"citation": paper.CITATION, "caveat": paper.CAVEAT,
                  "figures": [f.to_dict() for f in paper.FIGURES]},
        "figures": figures,
    }
