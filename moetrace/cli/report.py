"""`moetrace report TRACE -o DIR`: backtest the predictors and write the error-rate report."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import Bucket, Order, Predictors, Seed, TrainTrace, Window
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import Force, JsonFlag, JsonOut, emit_json, safe
from moetrace.defaults import HORIZONS, MIN_HISTORY, ORIGINS, STATE_WINDOW
from moetrace.output import check_output

if TYPE_CHECKING:
    from moetrace.report import Report


@command()
def report(
    trace: Annotated[str, typer.Argument(help="Trace file, directory of parts, or glob.",
                                         metavar="TRACE")],
    out: Annotated[Path, typer.Option("-o", "--out", metavar="DIR",
                                      help="Report directory to write.")],
    horizon: Annotated[str, typer.Option(
        "--horizon", "--horizons", metavar="STEPS",
        help="Forecast horizons to score, in training steps (comma-separated).")
    ] = ",".join(map(str, HORIZONS)),
    predictors: Predictors = None,
    stride: Annotated[Optional[int], typer.Option(
        metavar="STEPS", help="Training steps between origins (default: --origins spread "
        "over the trace).")] = None,
    origins: Annotated[Optional[int], typer.Option(
        "--origins", metavar="N",
        help=f"Number of origins spread evenly over the trace (default {ORIGINS}).")] = None,
    min_history: Annotated[int, typer.Option(
        "--min-history", metavar="STEPS",
        help="Training steps of history the first origin needs.")] = MIN_HISTORY,
    state_window: Annotated[int, typer.Option(
        "--state-window", metavar="STEPS",
        help="Window of the state analysis that labels each origin transient or stable "
             "(analyze's --window).")] = STATE_WINDOW,
    window: Window = None,
    bucket: Bucket = None,
    order: Order = None,
    seed: Seed = 0,
    train_trace: TrainTrace = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
    force: Force = False,
) -> None:
    """Backtest predictors at rolling origins and write report.md, report.html, report.json."""
    from moetrace.cli.options import parse_int_list, predictor_options
    from moetrace.report import build_report

    steps = parse_int_list(horizon, "--horizon")
    inputs = [trace] + ([train_trace] if train_trace else [])
    check_output(out, kind="dir", inputs=inputs, force=force)
    if json_out is not None:
        check_output(json_out, kind="file", inputs=inputs, force=force)
    options = predictor_options(window=window, bucket=bucket, order=order, seed=seed,
                                train_trace=train_trace)
    command_line = _command(trace, out, steps, predictors, stride, origins, min_history,
                            state_window, window, bucket, order, seed, train_trace)
    with progress_bar("backtest", quiet=as_json) as update:
        update(0, None, "reading and analyzing the trace")
        result = build_report(trace, out, predictors=predictors, horizons=steps, stride=stride,
                              n_origins=origins, min_history=min_history, options=options,
                              train_trace=train_trace, force=force, command=command_line,
                              progress=update, state_window=state_window)
    for item in result.document["parameters"]["skipped"]:
        warn(f"{item['predictor']} skipped: {item['reason']}")
    emit_json(result.document, to_stdout=as_json, path=json_out, inputs=inputs, force=force)
    if not as_json:
        _render(result)


def _command(trace, out, horizons, predictors, stride, origins, min_history, state_window,
             window, bucket, order, seed, train_trace) -> str:
    """The command line that reproduces this report, every option spelled out."""
    parts = ["moetrace", "report", trace, "-o", str(out), "--horizon",
             ",".join(map(str, horizons)), "--min-history", str(min_history),
             "--state-window", str(state_window), "--seed", str(seed)]
    for flag, value in (("--predictors", predictors), ("--stride", stride),
                        ("--origins", origins), ("--window", window), ("--bucket", bucket),
                        ("--order", order), ("--train-trace", train_trace)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _render(result: Report) -> None:
    from rich.table import Table

    from moetrace.report.document import pct
    from moetrace.report.results import find

    doc = result.document
    table = Table(title="Error rate, mean over layers (origins)")
    for name, justify in (("predictor", "left"), ("horizon", "right"), ("stable", "right"),
                          ("all", "right"), ("noise floor", "right")):
        table.add_column(name, justify=justify)
    for h in doc["parameters"]["horizons"]:
        for name in doc["parameters"]["predictors"]:
            stable = find(result.rows, predictor=name, horizon=h, state="stable")
            every = find(result.rows, predictor=name, horizon=h, state="all")
            cells = ["—" if r is None else f"{pct(r.error_rate)} ({r.origins})"
                     for r in (stable, every)]
            floor = (stable or every).noise_floor if (stable or every) else None
            table.add_row(name, f"{h:,}", *cells, pct(floor))
    console.print(table)
    console.print(f"report written to [bold]{safe(result.path)}[/] "
                  f"(report.html, report.md, report.json, figures/)")
