"""`moetrace report TRACE -o DIR`: backtest the predictors and write the error-rate report."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import (Backend, Bucket, Order, Predictors, RayAddress, Seed,
                                  TraceArg, TrainTrace, Window, Workers)
from moetrace.cli.progress import progress_bar
from moetrace.cli.render import Force, JsonFlag, JsonOut, emit_json, safe
from moetrace.defaults import HORIZONS, LOOKAHEAD_RADIUS, MIN_HISTORY, ORIGINS, STATE_WINDOW
from moetrace.errors import ParameterError
from moetrace.output import check_output

if TYPE_CHECKING:
    from moetrace.report import Report


@command()
def report(
    trace: TraceArg,
    out: Annotated[Path, typer.Option("-o", "--out", metavar="DIR",
                                      help="Report directory to write.")],
    horizon: Annotated[Optional[str], typer.Option(
        "--horizon", "--horizons", metavar="STEPS",
        help="Forecast horizons to score, in training steps, comma-separated (default "
             f"{','.join(map(str, HORIZONS))}; shrunk with a note for a trace too short).")
    ] = None,
    predictors: Predictors = None,
    stride: Annotated[Optional[int], typer.Option(
        metavar="STEPS", help="Training steps between origins (default: --origins spread "
        "over the trace).")] = None,
    origins: Annotated[Optional[int], typer.Option(
        "--origins", metavar="N",
        help=f"Number of origins spread evenly over the trace (default {ORIGINS}).")] = None,
    min_history: Annotated[Optional[int], typer.Option(
        "--min-history", metavar="STEPS",
        help=f"Training steps of history the first origin needs (default {MIN_HISTORY:,}).")
    ] = None,
    state_window: Annotated[Optional[int], typer.Option(
        "--state-window", metavar="STEPS",
        help="Window of the state analysis that labels each origin transient or stable "
             f"(analyze's --window; default {STATE_WINDOW}).")] = None,
    states: Annotated[str, typer.Option(
        "--states", metavar="LABELS",
        help="Label each origin's layers with the hindsight segmentation (as the paper) or "
             "with what a live job believed then (the online detector).")] = "hindsight",
    lookahead: Annotated[int, typer.Option(
        "--lookahead", metavar="STEPS",
        help="Half-width of the look-ahead bound's centred moving average (docs/metrics.md)."
    )] = LOOKAHEAD_RADIUS,
    gpus: Annotated[Optional[int], typer.Option(
        "--gpus", help="GPUs of the Placement section's cluster (default: the most up to 8 "
        "that divide the experts, one redundant slot each).")] = None,
    redundant: Annotated[Optional[int], typer.Option(
        "--redundant", help="Redundant expert slots of that cluster (default: one per GPU).")
    ] = None,
    no_placement: Annotated[bool, typer.Option(
        "--no-placement", help="Leave out the Placement section (no replay).")] = False,
    window: Window = None,
    bucket: Bucket = None,
    order: Order = None,
    seed: Seed = 0,
    train_trace: TrainTrace = None,
    backend: Backend = None,
    workers: Workers = None,
    ray_address: RayAddress = None,
    as_json: JsonFlag = False,
    json_out: JsonOut = None,
    force: Force = False,
) -> None:
    """Backtest predictors at rolling origins and write report.md, report.html, report.json."""
    from moetrace.cli.options import executor, parse_int_list, predictor_options
    from moetrace.report import build_report

    steps = None if horizon is None else parse_int_list(horizon, "--horizon")
    inputs = [trace] + ([train_trace] if train_trace else [])
    check_output(out, kind="dir", inputs=inputs, force=force)
    if json_out is not None:
        check_output(json_out, kind="file", inputs=inputs, force=force)
    options = predictor_options(window=window, bucket=bucket, order=order, seed=seed,
                                train_trace=train_trace)
    if no_placement and (gpus or redundant is not None):
        raise ParameterError("--no-placement leaves out the section --gpus and --redundant "
                             "describe")
    placement = None if no_placement else "default" if gpus is None and redundant is None \
        else _cluster(trace, gpus, redundant)
    command_line = _command(trace, out, {
        "--horizon": horizon, "--predictors": predictors, "--stride": stride,
        "--origins": origins, "--min-history": min_history, "--state-window": state_window,
        "--states": states if states != "hindsight" else None,
        "--lookahead": lookahead if lookahead != LOOKAHEAD_RADIUS else None,
        "--gpus": gpus, "--redundant": redundant, "--no-placement": True if no_placement else None,
        "--window": window, "--bucket": bucket, "--order": order, "--seed": seed or None,
        "--train-trace": train_trace})
    with progress_bar("backtest", quiet=as_json) as update:
        update(0, None, "reading and analyzing the trace")
        result = build_report(trace, out, predictors=predictors, horizons=steps, stride=stride,
                              n_origins=origins, min_history=min_history, options=options,
                              train_trace=train_trace, force=force, command=command_line,
                              progress=update, state_window=state_window, states=states,
                              lookahead_radius=lookahead, placement=placement,
                              executor=executor(backend, workers, ray_address))
    for item in result.document["parameters"]["skipped"]:
        warn(f"{item['predictor']} skipped: {item['reason']}")
    emit_json(result.document, to_stdout=as_json, path=json_out, inputs=inputs, force=force)
    if not as_json:
        _render(result)


def _cluster(trace: str, gpus: int | None, redundant: int | None):
    """The Placement section's cluster from --gpus/--redundant (defaults as default_cluster)."""
    from moetrace.placement import Cluster, default_cluster
    from moetrace.trace import read_trace

    base = default_cluster(read_trace(trace).n_experts)
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
    """The report's bottom line, as its first screen shows it."""
    from rich import box
    from rich.table import Table

    from moetrace.report.document import note_lines, pct

    table = Table(title="Bottom line: the predictor to trust, per horizon and state",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for name in ("horizon", "state", "best", "error", "vs naive", "x ref.", "tie with"):
        table.add_column(name, justify="left" if name in ("state", "best", "tie with")
                         else "right")
    for b in result.document["bottom_line"]:
        gain = b["gain_over_naive"]
        table.add_row(f"{b['horizon']:,}", b["state"], safe(b["best"]),
                      pct(b["error_rate_median"]),
                      "-" if gain is None else f"{-gain * 100:+.0f}%",
                      "-" if b["times_reference"] is None else f"{b['times_reference']:.2f}x",
                      safe(", ".join(b["ties"]) or "none"))
    console.print(table)
    console.print("error: median over origins of the per-step error rate; vs naive: relative "
                  "to naive's; x ref.: times the higher of the noise floor and the look-ahead "
                  "bound (what no forecaster can be expected to beat)", style="dim")
    for line in note_lines(result.document):
        console.print(safe(line), style="dim")
    console.print(f"report written to [bold]{safe(result.path)}[/] "
                  f"(report.html, report.md, report.json, figures/)")
