"""``write_report``: the report directory from what the pipeline computed.

The directory (report.json, report.md, report.html, figures/) is written atomically: it is
complete or absent, and an existing one is replaced only with ``force``. Nothing here runs an
analysis, a backtest or a replay: moetrace.pipeline does, and hands the results over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from moetrace import __version__
from moetrace.backtest import BacktestResult
from moetrace.calibrate import calibration_verdict
from moetrace.jsondoc import dumps
from moetrace.output import write_dir
from moetrace.report import paper
from moetrace.report.document import report_blocks
from moetrace.report.figures import write_figures
from moetrace.report.html import render_html
from moetrace.report.markdown import render_markdown
from moetrace.report.results import SCHEMA_NAME, SCHEMA_VERSION, STATES, Row, summarize
from moetrace.report.verdict import (bottom_line, fallback_record, headline, notes,
                                     recommendation)
from moetrace.trace.shares import Loads

if TYPE_CHECKING:
    from moetrace.states import Analysis
    from moetrace.trace import Trace


@dataclass(frozen=True)
class Report:
    """A written report: where it is, its JSON document and its result rows."""

    path: Path
    document: dict
    rows: list[Row]


def write_report(data, out: str | Path, *, inputs=(), force: bool = False,
                 command: str = "", train_trace: str | None = None) -> Report:
    """Write the report of ``data`` (a moetrace.pipeline.Backtested) into ``out``."""
    out = Path(out)
    trace, analysis, result = data.trace, data.analysis, data.result
    fitted, options, placed = data.span, data.options, data.placement
    rows = summarize(result, data.floors)
    parameters = {
        "predictors": list(result.predictors), "horizons": list(result.horizons),
        "skipped": [{"predictor": n, "reason": r} for n, r in data.skipped],
        "state_window": fitted.state_window, "states": data.states,
        "lookahead_radius": data.lookahead_radius, "shrunk": list(fitted.notes),
        "stride": data.stride,
        "n_origins": None if data.stride else (data.n_origins or len(result.origins)),
        "min_history": fitted.min_history, "window": options.window, "bucket": options.bucket,
        "order": list(options.order) if options.order else None, "seed": options.seed,
        "train_trace": train_trace, "command": command,
        "placement": None if placed is None else {"gpus": placed.cluster.gpus,
                                                  "replicas": placed.slots},
        "constant": constant_forecasts(result),
    }
    with write_dir(out, inputs=inputs, force=force, command=command) as tmp:
        figures = write_figures(tmp / "figures", result, data.example, rows,
                                stable_from=analysis.model_stable_from, floors=data.floors,
                                placement=placed)
        placement = (None if placed is None else
                     {**placed.document(str(trace.path)), "skipped": None,
                      "recommendation": recommendation_document(data, str(trace.path))})
        if placed is None and data.placement_note:
            placement = {"skipped": data.placement_note}
        doc = report_document(trace, analysis, result, rows, parameters,
                              [{"file": f"figures/{f.name}", "caption": f.caption}
                               for f in figures], data.floors, placement)
        (tmp / "report.json").write_text(dumps(doc))
        blocks = report_blocks(doc)
        (tmp / "report.md").write_text(render_markdown(blocks))
        (tmp / "report.html").write_text(
            render_html(blocks, tmp, title=f"moetrace report: {Path(str(trace.path)).name}"))
    return Report(out, doc, rows)


def recommendation_document(data, trace: str) -> dict:
    """The placement section's recommendation: ``plan --recommend``'s document less its
    header (docs/placement.md), with ``skipped`` null; or ``{"skipped": why}``."""
    found = data.recommended
    if found is None:
        return {"skipped": data.recommend_note or "no setting searched"}
    doc = found.document(trace)
    return {k: v for k, v in doc.items() if k not in ("schema", "version", "trace")} | {
        "skipped": None}


def constant_forecasts(result: BacktestResult) -> dict[str, bool]:
    """Per predictor: whether every forecast it made in this backtest was held constant over
    the horizon, so that the constant bound binds all of its errors (naive and plain window
    means are; sw_avg's recursive slide, arima, drift and auto in general are not)."""
    out = {}
    for name in result.predictors:
        flags = np.concatenate([result.scores[(name, h)].metrics["constant"].ravel()
                                for h in result.horizons])
        flags = flags[np.isfinite(flags)]
        out[name] = bool(flags.size and (flags == 1).all())
    return out


def calibration_verdicts(result: BacktestResult) -> dict[str, str]:
    """Per predictor that states its uncertainty, the one line the calibration section ends
    with (moetrace.calibrate.calibration_verdict): its intervals judged in the stable state;
    where it made no forecast there, in the transient one; without states, over all pairs."""
    out = {}
    for name in result.predictors:
        for state in ("stable", "transient", "all"):
            line = calibration_verdict(result, name, state)
            if line is not None:
                out[name] = line
                break
    return out


def report_document(trace: Trace, analysis: Analysis, result: BacktestResult, rows: list[Row],
                    parameters: dict, figures: list[dict], floors: dict[str, np.ndarray],
                    placement: dict | None = None) -> dict:
    """The report.json document (schema: docs/report.md); ``placement`` is the replay's
    document (or ``{"skipped": why}``, or None), which the headline reads."""
    steps = trace.steps
    axis = Loads.axis(steps)
    slots = int(np.median(trace.step_totals.get_column("tokens").to_numpy()))
    tokens = trace.metadata.tokens_per_step or slots // (trace.metadata.top_k or 1)
    calibration = [{"predictor": name, "horizon": h, "origin": int(t), "layer": layer,
                    "stable": bool(result.stable[i, j]),
                    "expected_error": float(m["expected_error"][i, j]),
                    "error_rate": float(m["error_rate"][i, j]),
                    "coverage": float(m["coverage"][i, j])}
                   for (name, h), s in result.scores.items() for m in (s.metrics,)
                   for i, t in enumerate(result.origins)
                   for j, layer in enumerate(result.layers)
                   if np.isfinite(m["expected_error"][i, j]) and np.isfinite(m["error_rate"][i, j])]
    bottom = bottom_line(result, rows, floors)
    recommended = recommendation(bottom, placement, result.predictors[0])
    return {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "moetrace_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "headline": headline(recommended, bottom, placement),
        "recommendation": recommended,
        "trace": {
            "path": trace.path, "model": trace.metadata.model, "n_layers": trace.n_layers,
            "n_experts": trace.n_experts, "top_k": trace.metadata.top_k,
            "tokens_per_step": int(tokens), "source": trace.metadata.source,
            "first_step": int(steps[0]), "last_step": int(steps[-1]), "n_steps": len(steps),
            "interval": trace.interval, "gaps": [list(g) for g in trace.gaps],
            "samples_per_horizon": {str(h): axis.horizon_samples(h) for h in result.horizons},
            "checksummed": trace.checksummed,
        },
        "bottom_line": bottom,
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
        "calibration_verdict": calibration_verdicts(result),
        "fallbacks": fallback_record(result),
        "timings": {"backtest_seconds": {k: round(v, 3) for k, v in result.seconds.items()}},
        "paper": {"citation": paper.CITATION, "caveat": paper.CAVEAT,
                  "figures": [f.to_dict() for f in paper.FIGURES]},
        "figures": figures,
        "placement": placement,
    }
