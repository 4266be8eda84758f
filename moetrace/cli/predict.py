"""`moetrace predict TRACE`: forecast each expert's load share for the next H steps.

Fits the chosen predictors on the trace up to its last step (or ``--at``), writes the long
forecast table and prints, per predictor and layer, the experts forecast hottest and coldest
and the forecast max/mean imbalance.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from moetrace.cli.app import app, console
from moetrace.cli.options import predictor_options
from moetrace.predictors.forecast import Forecasts, forecast_trace


def _experts(experts: list[int], shares: list[float]) -> str:
    return "  ".join(f"{e}:{100 * s:.2f}%" for e, s in zip(experts, shares))


def render(forecasts: Forecasts, title: str) -> None:
    """One table per predictor: hottest and coldest experts and max/mean imbalance by layer."""
    summary = forecasts.summary()
    for name in forecasts.shares:
        table = Table(title=f"{title}: {name}", title_justify="left", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        for column in ("layer", "hottest expert:share", "coldest expert:share",
                       "max/mean"):
            table.add_column(column, justify="right" if column in ("layer", "max/mean")
                             else "left")
        for row in summary.filter(summary["predictor"] == name).iter_rows(named=True):
            table.add_row(str(row["layer"]), _experts(row["hottest"], row["hottest_share"]),
                          _experts(row["coldest"], row["coldest_share"]),
                          f"{row['imbalance']:.2f}")
        console.print(table)
    console.print("max/mean: the busiest expert's forecast share over the mean share, averaged "
                  "over the horizon", style="dim")


@app.command()
def predict(
    trace: Annotated[str, typer.Argument(help="Trace file, directory of parts, or glob.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Forecast table to write (Parquet: "
                                      "predictor, origin, step, layer, expert, share).")],
    predictor: Annotated[str, typer.Option(
        help="naive, sw_avg, arima, lstm, a comma-separated list, or all.")] = "all",
    horizon: Annotated[int, typer.Option(help="Steps to forecast after the origin.")] = 1000,
    at: Annotated[Optional[int], typer.Option(
        help="Origin step: forecast from the history up to and including it "
             "(default: the trace's last step).")] = None,
    window: Annotated[Optional[int], typer.Option(
        help="sw_avg window in steps (default 1000).")] = None,
    order: Annotated[Optional[str], typer.Option(
        help="ARIMA order p,d,q (the paper used 5,1,5); default: chosen from the data.")] = None,
    bucket: Annotated[Optional[int], typer.Option(
        help="Steps per bucket the predictors model (default: 1 for naive and sw_avg, "
             "20 for arima and lstm).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (lstm).")] = 0,
    train_trace: Annotated[Optional[str], typer.Option(
        "--train-trace", help="Train the lstm on this trace instead of the history.")] = None,
) -> None:
    """Forecast each expert's load share for the next H steps with the paper's predictors.

    Forecast shares are non-negative and sum to 1 per layer and step; only history up to the
    origin is used. See docs/predictors.md.
    """
    options = predictor_options(window=window, bucket=bucket, order=order, seed=seed,
                                train_trace=train_trace)
    names = [n.strip() for n in predictor.split(",") if n.strip()]
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
               "{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        tasks: dict[str, int] = {}

        def report(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = progress.add_task(task, total=total)
            progress.update(tasks[task], completed=done, total=total)

        forecasts = forecast_trace(trace, names, horizon, at, replace(options, progress=report),
                                   out=out)
    render(forecasts, f"{trace}: {len(forecasts.steps)} steps after step {forecasts.origin}")
    console.print(f"wrote forecasts [bold]{out}[/]")
