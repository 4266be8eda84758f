"""`moetrace report TRACE -o DIR`: backtest the predictors and write the error-rate report."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import click

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import (PathType, execution, execution_options, output_options,
                                  parse_int_list, predictor_options, predictor_settings,
                                  predictors_option, state_window_option, trace_argument)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import emit_json, safe
from moetrace.defaults import HORIZONS, LOOKAHEAD_RADIUS, MIN_HISTORY, ORIGINS, REPORT_GPUS
from moetrace.errors import ParameterError
from moetrace.output import check_outputs

if TYPE_CHECKING:
    from moetrace.report import Report


@command()
@trace_argument
@click.option("-o", "--out", type=PathType, metavar="DIR", required=True,
              help="Report directory to write.")
@click.option("--horizon", "--horizons", "horizon", metavar="STEPS",
              help="Forecast horizons to score, in training steps, comma-separated (default "
                   f"{','.join(map(str, HORIZONS))}; shrunk with a note for a short trace).")
@predictors_option
@click.option("--stride", type=int, metavar="STEPS",
              help="Training steps between origins (default: --origins spread over the "
                   "trace).")
@click.option("--origins", type=int, metavar="N",
              help=f"Number of origins spread evenly over the trace (default {ORIGINS}).")
@click.option("--min-history", type=int, metavar="STEPS",
              help=f"Training steps of history the first origin needs (default "
                   f"{MIN_HISTORY:,}).")
@state_window_option(": it labels each origin transient or stable")
@click.option("--states", type=click.Choice(["hindsight", "online"]), default="hindsight",
              show_default=True,
              help="Label each origin's layers with the hindsight segmentation (as the paper) "
                   "or with what a live job believed then (the online detector).")
@click.option("--lookahead", type=int, default=LOOKAHEAD_RADIUS, show_default=True,
              metavar="STEPS",
              help="Half-width of the look-ahead reference's centred moving average "
                   "(docs/metrics.md).")
@click.option("--gpus", type=int, metavar="G",
              help="GPUs of the Placement section's cluster (default: the most up to "
                   f"{REPORT_GPUS} that divide the experts, one redundant slot each).")
@click.option("--redundant", type=int, metavar="X",
              help="Redundant expert slots of that cluster (default: one per GPU).")
@click.option("--no-placement", is_flag=True, help="Leave out the Placement section.")
@predictor_options
@execution_options
@output_options
def report(trace: str, out: Path, horizon: str | None, predictors: str | None,
           stride: int | None, origins: int | None, min_history: int | None,
           state_window: int | None, states: str, lookahead: int, gpus: int | None,
           redundant: int | None, no_placement: bool, backend, workers, ray_address,
           as_json: bool, json_out: Path | None, force: bool, **hyper) -> None:
    """Backtest predictors at rolling origins and write report.md, report.html, report.json."""
    from moetrace import pipeline
    from moetrace.report import write_report

    steps = None if horizon is None else parse_int_list(horizon, "--horizon")
    inputs = [trace] + ([hyper["train_trace"]] if hyper.get("train_trace") else [])
    check_outputs([(out, "dir"), (json_out, "file")], inputs=inputs, force=force)
    options, train = predictor_settings(**hyper)
    if no_placement and (gpus or redundant is not None):
        raise ParameterError("--no-placement leaves out the section --gpus and --redundant "
                             "describe")
    command_line = _command(trace, out, {
        "--horizon": horizon, "--predictors": predictors, "--stride": stride,
        "--origins": origins, "--min-history": min_history, "--state-window": state_window,
        "--states": states if states != "hindsight" else None,
        "--lookahead": lookahead if lookahead != LOOKAHEAD_RADIUS else None,
        "--gpus": gpus, "--redundant": redundant, "--no-placement": True if no_placement else None,
        "--sw-window": hyper.get("sw_window"), "--bucket": hyper.get("bucket"),
        "--order": hyper.get("order"), "--seed": hyper.get("seed") or None,
        "--train-trace": hyper.get("train_trace")})
    with progress_bar("report", quiet=as_json) as progress:
        progress(0, None, "reading and analyzing the trace")
        run = execution(backend, workers, ray_address, progress)
        data = pipeline.open_trace(trace, run)
        placement = None if no_placement else "default" if gpus is None and redundant is None \
            else _cluster(data.n_experts, gpus, redundant)
        computed = pipeline.backtest(
            data, predictors=predictors, horizons=steps, stride=stride, n_origins=origins,
            min_history=min_history, options=options, train=train, state_window=state_window,
            states=states, lookahead_radius=lookahead, placement=placement,
            run=run)
        result = write_report(computed, out, inputs=inputs, force=force, command=command_line,
                              train_trace=hyper.get("train_trace"))
    for item in result.document["parameters"]["skipped"]:
        warn(f"{item['predictor']} skipped: {item['reason']}")
    emit_json(result.document, to_stdout=as_json, path=json_out, inputs=inputs, force=force)
    if not as_json:
        _render(result)


def _cluster(n_experts: int, gpus: int | None, redundant: int | None):
    """The Placement section's cluster from --gpus/--redundant (defaults as default_cluster)."""
    from moetrace.placement import Cluster, default_cluster

    base = default_cluster(n_experts)
    gpus = base.gpus if gpus is None else gpus
    return Cluster(gpus=gpus, redundant=gpus if redundant is None else redundant)


def _command(trace, out, options: dict) -> str:
    """The command line that reproduces this report: every option given."""
    parts = ["moetrace", "report", trace, "-o", str(out)]
    for flag, value in options.items():
        if value is True:
            parts.append(flag)
        elif value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _render(result: Report) -> None:
    """The report's first screen: the headline, then the bottom line: per horizon and state,
    every predictor's error with its paired verdict against the best."""
    from rich import box
    from rich.table import Table

    from moetrace.report.document import note_lines, pct

    doc = result.document
    console.print(safe(doc["headline"]), style="bold")
    predictors = doc["parameters"]["predictors"]
    table = Table(title="Bottom line: each predictor against the best", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1))
    for name in ("horizon", "state", "origins/\npairs", *map(safe, predictors),
                 "constant\nbound"):
        table.add_column(name, justify="left" if name == "state" else "right", no_wrap=True)
    unranked = []
    for b in doc["bottom_line"]:
        rows = {r["predictor"]: r for r in doc["results"] if r["layer"] is None
                and r["horizon"] == b["horizon"] and r["state"] == b["state"]}
        if not b["ranked"]:
            unranked.append(f"{b['horizon']:,} steps, {b['state']}: {b['reason']}")
        table.add_row(f"{b['horizon']:,}", b["state"], f"{b['origins']}/{b['pairs']}",
                      *(_entry(b, rows.get(name), name) for name in predictors),
                      pct(b["constant_bound"]))
    console.print(table)
    console.print("each entry: the mean over origins of the layer-mean error rate, then the "
                  "verdict paired with the best on the same (origin, layer) pairs (~best: no "
                  "clear difference; better/worse only where the 95% interval of the "
                  "difference excludes zero); fbK: fell back at K origins; constant bound: the "
                  "least error of any forecast held constant over the horizon", style="dim")
    for line in unranked + note_lines(doc):
        console.print(safe(line), style="dim")
    for line in doc["calibration_verdict"].values():
        console.print(safe(line), style="dim")
    console.print(f"report written to [bold]{safe(result.path)}[/] "
                  f"(report.html, report.md, report.json, figures/)", soft_wrap=True)


_MARKS = {"better": "better", "no clear difference": "~best", "worse": "worse"}


def _entry(cell: dict, row: dict | None, name: str) -> str:
    """One predictor in one cell: its error, then best / ~best / worse / better, and how
    often it fell back."""
    from moetrace.report.document import pct

    if row is None:
        return "-"
    mark = "best" if cell["best"] == name else _MARKS.get(cell["verdicts"].get(name), "")
    count = cell["fell_back"].get(name, 0)
    return "\n".join(x for x in (pct(row["error_rate"]), mark, f"fb{count}" if count else "")
                     if x)
