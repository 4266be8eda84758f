"""`moetrace predict TRACE`: forecast each expert's load share for the next H steps.

Fits the chosen predictors on the trace up to its last step (or ``--at``), writes the long
forecast table and prints, per predictor and layer, the experts forecast hottest and coldest
and the forecast max/mean imbalance.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import (Backend, Bucket, Order, Predictors, RayAddress, Seed,
                                  TraceArg, TrainTrace, Window, Workers)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import Force, JsonFlag, JsonOut, emit_json, safe
from moetrace.defaults import HORIZON
from moetrace.output import check_output

if TYPE_CHECKING:
    from moetrace.predictors.forecast import Forecasts


def _experts(experts: list[int], shares: list[float]) -> str:
    return "  ".join(f"{e}:{100 * s:.2f}%" for e, s in zip(experts, shares))


def render(forecasts: Forecasts, title: str) -> None:
    """One table per predictor: hottest and coldest experts and max/mean imbalance by layer."""
    from rich import box
    from rich.table import Table

    summary = forecasts.summary()
    for name in forecasts.shares:
        table = Table(title=f"{safe(title)}: {name}", title_justify="left", box=box.SIMPLE_HEAD,
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


@command()
def predict(
    trace: TraceArg,
    out: Annotated[Optional[Path], typer.Option(
        "-o", "--out", metavar="FILE", help="Forecast table to write (Parquet: predictor, "
        "origin, step, layer, expert, share).")] = None,
    predictors: Predictors = None,
    horizon: Annotated[int, typer.Option(
        "--horizon", help="Training steps to forecast after the origin.")] = HORIZON,
    at: Annotated[Optional[int], typer.Option(
        help="Origin step: forecast from the history up to and including it "
             "(default: the trace's last step).")] = None,
    window: Window = None,
    order: Order = None,
    bucket: Bucket = None,
    seed: Seed = 0,
    train_trace: TrainTrace = None,
    backend: Backend = None,
    workers: Workers = None,
    ray_address: RayAddress = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
    force: Force = False,
) -> None:
    """Forecast each expert's load share for the next H steps.

    Forecast shares are non-negative and sum to 1 per layer and step; only history up to the
    origin is used. See docs/predictors.md.
    """
    from moetrace.cli.options import executor, predictor_options
    from moetrace.predictors.forecast import forecast_trace

    inputs = [trace] + ([train_trace] if train_trace else [])
    if json_out is not None:
        check_output(json_out, kind="file", inputs=inputs, force=force)
    options = predictor_options(window=window, bucket=bucket, order=order, seed=seed,
                                train_trace=train_trace)
    with progress_bar("predicting", quiet=as_json, tasks=True) as update:
        forecasts = forecast_trace(
            trace, predictors, horizon, at,
            replace(options, progress=lambda task, done, total: update(done, total, task)),
            out=out, force=force, executor=executor(backend, workers, ray_address))
    for name, reason in forecasts.skipped:
        warn(f"{name} skipped: {reason}")
    emit_json(forecasts.document(trace), to_stdout=as_json, path=json_out, inputs=inputs,
              force=force)
    if as_json:
        return
    render(forecasts, f"{trace}: {len(forecasts.steps):,} steps after step {forecasts.origin:,}")
    if out is not None:
        console.print(f"wrote forecasts [bold]{safe(out)}[/]")
    else:
        console.print("the forecast table was not written (pass -o FILE)", style="dim")
