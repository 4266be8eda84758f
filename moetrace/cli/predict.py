"""`moetrace predict TRACE`: forecast each expert's load share for the next H steps.

Fits the chosen predictors on the trace up to its last step (or ``--at``), writes the long
forecast table and prints, per predictor and layer, the experts forecast hottest and coldest
and the forecast max/mean imbalance.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import (PathType, execution, execution_options, output_options,
                                  predictor_options, predictor_settings, predictors_option,
                                  trace_argument)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import emit_json, safe
from moetrace.defaults import HORIZON
from moetrace.output import check_outputs

if TYPE_CHECKING:
    from moetrace.forecast import Forecasts


def _experts(experts: list[int], shares: list[float]) -> str:
    return "  ".join(f"{e}:{100 * s:.2f}%" for e, s in zip(experts, shares))


def render(forecasts: Forecasts, title: str) -> None:
    """One table per predictor: hottest and coldest experts and max/mean imbalance by layer."""
    from rich import box
    from rich.table import Table

    summary = forecasts.summary()
    for name in forecasts.shares:
        credit = " (fell back to a simpler rule: see the note)" if forecasts.fallbacks.get(
            name) else ""
        table = Table(title=f"{safe(title)}: {name}{credit}", title_justify="left",
                      box=box.SIMPLE_HEAD, pad_edge=False)
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
@trace_argument
@click.option("-o", "--out", type=PathType, metavar="FILE",
              help="Forecast table to write: Parquet (FILE.parquet) or CSV (FILE.csv), with "
                   "columns predictor, origin, step, layer, expert, share, mean_lower, "
                   "mean_upper.")
@predictors_option
@click.option("--horizon", type=int, default=HORIZON, show_default=True, metavar="STEPS",
              help="Training steps to forecast after the origin.")
@click.option("--at", type=int, metavar="STEP",
              help="Origin step: forecast from the history up to and including it (default: "
                   "the trace's last step).")
@predictor_options
@execution_options
@output_options
def predict(trace: str, out: Path | None, predictors: str | None, horizon: int,
            at: int | None, backend, workers, ray_address, as_json: bool,
            json_out: Path | None, force: bool, **hyper) -> None:
    """Forecast each expert's load share for the next H steps.

    Forecast shares are non-negative and sum to 1 per layer and step; only history up to the
    origin is used. See docs/predictors.md.
    """
    from moetrace import pipeline
    from moetrace.forecast import forecast_format, write_forecasts

    inputs = [trace] + ([hyper["train_trace"]] if hyper.get("train_trace") else [])
    if out is not None:
        forecast_format(out)
    check_outputs([(out, "file"), (json_out, "file")], inputs=inputs, force=force)
    options, train = predictor_settings(**hyper)
    with progress_bar("predicting", quiet=as_json, tasks=True) as progress:
        forecasts = pipeline.forecast(trace, predictors, horizon, at, options, train=train,
                                      run=execution(backend, workers, ray_address, progress))
        if out is not None:
            write_forecasts(forecasts, out, inputs=inputs, force=force)
    for name, reason in forecasts.skipped:
        warn(f"{name} skipped: {reason}")
    for name, reason in forecasts.fallbacks.items():
        if reason:
            warn(f"{name} fell back: {reason}")
    emit_json(forecasts.document(trace), to_stdout=as_json, path=json_out, inputs=inputs,
              force=force)
    if as_json:
        return
    render(forecasts, f"{trace}: {len(forecasts.steps):,} steps after step {forecasts.origin:,}")
    if out is not None:
        console.print(f"wrote forecasts [bold]{safe(out)}[/]", soft_wrap=True)
    else:
        console.print("the forecast table was not written (pass -o FILE)", style="dim")
