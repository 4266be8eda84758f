"""`moetrace report TRACE -o DIR`: backtest the predictors and write the error-rate report."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moetrace.backtest import DEFAULT_MIN_HISTORY
from moetrace.cli.app import app, console
from moetrace.cli.options import parse_int_list, predictor_options
from moetrace.errors import ParameterError
from moetrace.report import DEFAULT_HORIZONS, DEFAULT_PREDICTORS, Report, build_report
from moetrace.report.document import pct
from moetrace.report.results import find


@app.command()
def report(
    trace: Annotated[str, typer.Argument(help="Trace file, glob or directory.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Report directory to write.")],
    horizons: Annotated[str, typer.Option(
        help="Comma-separated forecast horizons in steps.")] = ",".join(map(str, DEFAULT_HORIZONS)),
    predictors: Annotated[str, typer.Option(
        help="Comma-separated predictors to backtest.")] = ",".join(DEFAULT_PREDICTORS),
    stride: Annotated[Optional[int], typer.Option(
        help="Steps between origins (default: --origins spread over the trace).")] = None,
    origins: Annotated[Optional[int], typer.Option(
        "--origins", help="Number of origins spread evenly over the trace (default 12).")] = None,
    min_history: Annotated[int, typer.Option(
        "--min-history", help="Steps of history the first origin needs.")] = DEFAULT_MIN_HISTORY,
    window: Annotated[Optional[int], typer.Option(
        help="sw_avg window in steps (default: the predictor's).")] = None,
    bucket: Annotated[Optional[int], typer.Option(
        help="Steps per bucket for predictors that bucket (default: theirs).")] = None,
    order: Annotated[Optional[str], typer.Option(
        help="ARIMA order p,d,q, or auto.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (LSTM).")] = 0,
    train_trace: Annotated[Optional[str], typer.Option(
        "--train-trace", help="Separate trace to train the LSTM on, as the paper did.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace DIR if it exists.")] = False,
) -> None:
    """Backtest predictors at rolling origins and write report.md, report.html, report.json."""
    names = [n.strip() for n in predictors.split(",") if n.strip()]
    if not names:
        raise ParameterError("--predictors needs at least one predictor name")
    steps = parse_int_list(horizons, "--horizons")
    options = predictor_options(window=window, bucket=bucket, order=order, seed=seed,
                                train_trace=train_trace)
    command = _command(trace, out, steps, names, stride, origins, min_history, window, bucket,
                       order, seed, train_trace)
    with Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task("reading and analyzing the trace", total=None)

        def progress(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        result = build_report(trace, out, predictors=names, horizons=steps, stride=stride,
                              n_origins=origins, min_history=min_history, options=options,
                              train_trace=train_trace, force=force, command=command,
                              progress=progress)
    _render(result)


def _command(trace, out, horizons, names, stride, origins, min_history, window, bucket, order,
             seed, train_trace) -> str:
    """The command line that reproduces this report, every option spelled out."""
    parts = ["moetrace", "report", trace, "-o", str(out), "--horizons",
             ",".join(map(str, horizons)), "--predictors", ",".join(names),
             "--min-history", str(min_history), "--seed", str(seed)]
    for flag, value in (("--stride", stride), ("--origins", origins), ("--window", window),
                        ("--bucket", bucket), ("--order", order),
                        ("--train-trace", train_trace)):
        if value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _render(result: Report) -> None:
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
    console.print(f"report written to [bold]{result.path}[/] "
                  f"(report.html, report.md, report.json, figures/)")
