"""Options that several commands share: declared once, parsed once, named the same everywhere.

Vocabulary (docs/cli.md): ``--predictors`` (names, a comma-separated list, or ``all``),
``--horizon`` (training steps; a comma-separated list where a command scores several),
``--window``/``--bucket`` (training steps), ``--order``, ``--seed``, ``--train-trace``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Optional

import typer

from moetrace.defaults import SW_AVG_WINDOW
from moetrace.errors import ParameterError

if TYPE_CHECKING:
    from moetrace.predictors.base import PredictorOptions

TraceArg = Annotated[str, typer.Argument(help="Trace file, directory of parts, or glob.",
                                        metavar="TRACE")]
Predictors = Annotated[Optional[str], typer.Option(
    "--predictors", "--predictor", metavar="NAMES",
    help="Predictors: names (naive, sw_avg, arima, lstm, ...), a comma-separated list, or all. "
         "Default: the command's set, leaving out those whose extra is not installed.")]
Window = Annotated[Optional[int], typer.Option(
    metavar="STEPS", help=f"sw_avg window in training steps (default {SW_AVG_WINDOW}).")]
Order = Annotated[Optional[str], typer.Option(
    metavar="P,D,Q", help="ARIMA order (the paper used 5,1,5), or auto (default: chosen per "
    "layer from the data).")]
Bucket = Annotated[Optional[int], typer.Option(
    metavar="STEPS", help="Training steps per bucket the predictors model (default: 1 for "
    "naive and sw_avg, 20 for arima and lstm).")]
Seed = Annotated[int, typer.Option(help="Random seed (lstm).")]
TrainTrace = Annotated[Optional[str], typer.Option(
    "--train-trace", metavar="TRACE",
    help="Train the lstm on this separate trace instead of the history (as the paper did).")]


Backend = Annotated[Optional[str], typer.Option(
    "--backend", metavar="local|ray", help="Where chunks of layers are worked on: local "
    "processes (default, or MOETRACE_BACKEND) or a Ray cluster (docs/scaling.md).")]
Workers = Annotated[Optional[int], typer.Option(
    "--workers", metavar="N", help="Local worker processes (default: the machine's cores; "
    "with --backend ray, a local cluster's CPUs).")]
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray-address", metavar="ADDRESS", help="Ray cluster to submit to (default: "
    "MOETRACE_RAY_ADDRESS, else a local cluster started for the command).")]


def executor(backend: str | None, workers: int | None, address: str | None):
    """The executor of --backend/--workers/--ray-address (moetrace.scale)."""
    from moetrace.scale import make_executor

    if address and (backend or "") != "ray":
        raise ParameterError("--ray-address applies to --backend ray")
    return make_executor(backend, workers, address)


def parse_int_list(text: str, option: str) -> list[int]:
    """'1000,2000' -> [1000, 2000]; every value must be a positive integer."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ParameterError(f"{option} takes comma-separated integers, got '{text}'") from None
    if not values or min(values) <= 0:
        raise ParameterError(f"{option} takes positive integers, got '{text}'")
    return values


def parse_order(text: str | None) -> tuple[int, int, int] | None:
    """'5,1,5' -> (5, 1, 5); None or 'auto' -> None (chosen from the data)."""
    if text is None or text == "auto":
        return None
    try:
        p, d, q = (int(v) for v in text.split(","))
    except ValueError:
        raise ParameterError(f"--order takes p,d,q (for example 5,1,5) or auto, got '{text}'") \
            from None
    if min(p, d, q) < 0 or d > 2:
        raise ParameterError(f"--order needs p, q >= 0 and 0 <= d <= 2, got '{text}'")
    return p, d, q


def predictor_options(*, window: int | None, bucket: int | None, order: str | None, seed: int,
                      train_trace: str | None) -> PredictorOptions:
    """PredictorOptions from the CLI's shared options; reads --train-trace if given."""
    from moetrace.predictors.base import PredictorOptions
    from moetrace.trace import read_trace

    for name, value in (("--window", window), ("--bucket", bucket)):
        if value is not None and value <= 0:
            raise ParameterError(f"{name} must be a positive number of steps, got {value}")
    train = read_trace(train_trace).loads() if train_trace else None
    return PredictorOptions(window=window, bucket=bucket, order=parse_order(order), seed=seed,
                            train=train, train_path=train_trace)
