"""Options that several commands share: declared once, parsed once, named the same everywhere.

One name, one meaning (docs/cli.md, "Names"): ``--predictors`` (names, a comma-separated
list, or ``all``), ``--horizon`` (training steps), ``--sw-window`` (the sw_avg predictor's
window), ``--state-window`` (the state analysis's window), ``--load-window`` (the placement
window estimate's), ``--replan-interval`` (steps a placement is held), ``--planner`` (the
rebalance algorithm), ``--policies`` (placement replay strategies), the cluster options
(``--gpus``, ``--nodes``, ``--groups``, ``--replicas``, ``--redundant``), the execution options
(``--backend``, ``--workers``, ``--ray-address``) and the output options (``--json``,
``--json-out``, ``--force``). Each group is one decorator here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from moetrace.cli.app import renamed
from moetrace.defaults import (
    BYTES_PER_PARAM,
    GPU_FLOPS,
    INTER_NODE_BANDWIDTH,
    INTRA_NODE_BANDWIDTH,
    LOAD_WINDOW,
    MOVE_TOLERANCE,
    PLANNER,
    REARRANGEMENT,
    REPLAN_INTERVAL,
    STALL_SECONDS,
    STATE_WINDOW,
    SW_AVG_WINDOW,
)
from moetrace.errors import ParameterError

if TYPE_CHECKING:
    from moetrace.pipeline import Execution
    from moetrace.predictors.base import PredictorOptions

PathType = click.Path(path_type=Path)


def group(*decorators: Callable) -> Callable[[Callable], Callable]:
    """Several option decorators as one (applied so that --help lists them in order)."""
    def apply(fn: Callable) -> Callable:
        for decorate in reversed(decorators):
            fn = decorate(fn)
        return fn
    return apply


trace_argument = click.argument("trace", metavar="TRACE")

#: --json / --json-out / --force: the JSON convention and the output policy of every command
output_options = group(
    click.option("--json", "as_json", is_flag=True,
                 help="Print the results as one JSON document on stdout instead of the view."),
    click.option("--json-out", type=PathType, metavar="FILE",
                 help="Also write the JSON document to FILE."),
    click.option("--force", is_flag=True,
                 help="Replace existing outputs (a directory only if moetrace wrote it)."),
)

#: --backend / --workers / --ray-address: where the validation's ranges of rows and the chunks
#: of layers are worked on
execution_options = group(
    click.option("--backend", metavar="local|ray",
                 help="Where the work runs (ranges of rows to validate, chunks of layers): "
                      "local processes (default, or MOETRACE_BACKEND) or a Ray cluster "
                      "(docs/scaling.md)."),
    click.option("--workers", type=int, metavar="N",
                 help="Local worker processes (default: the cores this command may use; with "
                      "--backend ray, a local cluster's CPUs)."),
    click.option("--ray-address", metavar="ADDRESS",
                 help="Ray cluster to submit to (default: MOETRACE_RAY_ADDRESS, else a local "
                      "cluster started for the command)."),
)

#: the cluster a placement is for
cluster_options = group(
    click.option("--gpus", type=int, metavar="G", help="GPUs the experts are spread over."),
    click.option("--nodes", type=int, default=1, show_default=True,
                 help="Nodes (GPUs split evenly over them)."),
    click.option("--groups", type=int, default=1, show_default=True,
                 help="Expert groups (group-limited routing); kept whole on a node when the "
                      "nodes divide them."),
    click.option("--replicas", type=int, metavar="R",
                 help="Physical expert slots, a multiple of --gpus (default: one per expert)."),
    click.option("--redundant", type=int, metavar="X",
                 help="Slots beyond one per expert (R = experts + X)."),
    click.option("--planner", type=click.Choice(["balanced", "eplb"]), default=PLANNER,
                 show_default=True,
                 help="Rebalance algorithm: balanced, or eplb (DeepSeek's own)."),
    renamed("--rebalance", "--planner", type=click.Choice(["balanced", "eplb"])),
)

#: how a re-plan treats the placement in force (plan and replay)
move_options = group(
    click.option("--move-tolerance", type=click.FloatRange(0, 1), default=MOVE_TOLERANCE,
                 show_default=True, metavar="B",
                 help="Balancedness a re-plan may give up against a fresh plan to move fewer "
                      "replicas (never below EPLB's plan; balanced planner)."),
    click.option("--from-scratch", is_flag=True,
                 help="Re-plan from scratch: keep replicas in place only by naming GPUs."),
)

_positive = click.FloatRange(0, min_open=True)

#: the time model's parameters (moetrace/placement/timing.py; docs/placement.md)
time_model_options = group(
    click.option("--expert-params", type=click.IntRange(1), metavar="N",
                 help="Parameters of one expert (default: from the trace's model where "
                      "known)."),
    click.option("--bytes-per-param", type=click.IntRange(1), default=BYTES_PER_PARAM,
                 show_default=True, metavar="N",
                 help="Bytes moved per expert parameter: 16 for a training expert with Adam "
                      "state, 2 for a bf16 replica."),
    click.option("--token-seconds", type=_positive, metavar="S",
                 help="Measured seconds one GPU spends on one routed token in one expert "
                      "(default: 6 x expert parameters / --gpu-tflops)."),
    click.option("--gpu-tflops", type=_positive, default=GPU_FLOPS / 1e12, show_default=True,
                 metavar="T", help="Achieved TFLOP/s of one GPU on the experts."),
    click.option("--intra-node-gbps", type=_positive, default=INTRA_NODE_BANDWIDTH / 1e9,
                 show_default=True, metavar="GB",
                 help="GB/s into a GPU from its own node (NVLink)."),
    click.option("--inter-node-gbps", type=_positive, default=INTER_NODE_BANDWIDTH / 1e9,
                 show_default=True, metavar="GB",
                 help="GB/s into a GPU from another node (network)."),
    click.option("--rearrangement", type=click.Choice(["sync", "async"]),
                 default=REARRANGEMENT, show_default=True,
                 help="sync: training stops for each re-plan (a stall plus the copies); "
                      "async: only the copies are charged."),
    click.option("--stall-seconds", type=click.FloatRange(0), default=STALL_SECONDS,
                 show_default=True, metavar="S",
                 help="The stop of one synchronous re-plan beyond its copies."),
)

#: the predictors' hyperparameters
predictor_options = group(
    click.option("--sw-window", type=int, metavar="STEPS",
                 help=f"The sw_avg predictor's window in training steps (default "
                      f"{SW_AVG_WINDOW:,})."),
    renamed("--window", "--sw-window", type=int),
    click.option("--bucket", type=int, metavar="STEPS",
                 help="Training steps per bucket the predictors model (default: 1 for naive "
                      "and sw_avg, 20 for arima and lstm)."),
    click.option("--order", metavar="P,D,Q",
                 help="ARIMA order (the paper used 5,1,5), or auto (default: chosen per layer "
                      "from the data)."),
    click.option("--seed", type=int, default=0, show_default=True, help="Random seed (lstm)."),
    click.option("--train-trace", metavar="TRACE",
                 help="Train the lstm on this separate trace instead of the history (as the "
                      "paper did)."),
)

predictors_option = click.option(
    "--predictors", "--predictor", "predictors", metavar="NAMES",
    help="Predictors: names (naive, sw_avg, arima, lstm, drift, auto), a comma-separated list, "
         "or all. Default: the command's set, leaving out those whose extra is not installed.")


def state_window_option(help_suffix: str = "") -> Callable:
    return click.option(
        "--state-window", type=int, metavar="STEPS",
        help=f"Window of the state analysis, in training steps (default {STATE_WINDOW}; shrunk "
             f"with a note for a short trace){help_suffix}.")


replan_options = group(
    click.option("--replan-interval", type=int, metavar="STEPS",
                 help=f"Training steps a placement is held between re-plans (default "
                      f"{REPLAN_INTERVAL:,}; shrunk with a note for a short trace)."),
    renamed("--interval", "--replan-interval", type=int),
    click.option("--load-window", type=int, metavar="STEPS",
                 help=f"Training steps of counts the window estimate sums (default "
                      f"{LOAD_WINDOW:,}, vLLM's)."),
    renamed("--window", "--load-window", type=int),
    click.option("--predictor", default="auto", show_default=True, metavar="NAME",
                 help="Predictor of the forecast estimate."),
)


def execution(backend: str | None, workers: int | None, ray_address: str | None,
              progress=None) -> Execution:
    """The pipeline's Execution for --backend/--workers/--ray-address (moetrace.scale)."""
    from moetrace.pipeline import Execution
    from moetrace.scale import make_executor

    if ray_address and (backend or "") != "ray":
        raise ParameterError("--ray-address applies to --backend ray")
    return Execution(make_executor(backend, workers, ray_address), progress=progress)


def cluster(gpus: int | None, nodes: int, groups: int, replicas: int | None,
            redundant: int | None, planner: str, *, required: bool = True,
            move_tolerance: float = MOVE_TOLERANCE, from_scratch: bool = False):
    """The Cluster of the cluster options (None when --gpus is absent and not required);
    ``move_tolerance`` and ``from_scratch`` are the move options'."""
    from moetrace.placement import Cluster

    if gpus is None:
        if required:
            raise click.UsageError("Missing option '--gpus'.",
                                   click.get_current_context(silent=True))
        return None
    return Cluster(gpus=gpus, nodes=nodes, groups=groups, replicas=replicas,
                   redundant=redundant, planner=planner,
                   move_tolerance=None if from_scratch else move_tolerance)


def time_model(expert_params: int | None, bytes_per_param: int, token_seconds: float | None,
               gpu_tflops: float, intra_node_gbps: float, inter_node_gbps: float,
               rearrangement: str, stall_seconds: float):
    """The TimeModel of the time model options (the expert size None: the trace's)."""
    from moetrace.placement import TimeModel

    return TimeModel(expert_params=expert_params, bytes_per_param=bytes_per_param,
                     token_seconds=token_seconds, gpu_flops=gpu_tflops * 1e12,
                     intra_node_bandwidth=intra_node_gbps * 1e9,
                     inter_node_bandwidth=inter_node_gbps * 1e9, rearrangement=rearrangement,
                     stall_seconds=stall_seconds)


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


def predictor_settings(*, sw_window: int | None, bucket: int | None, order: str | None,
                       seed: int, train_trace: str | None, **_: Any
                       ) -> tuple[PredictorOptions, Any]:
    """The PredictorOptions of the predictor options, and the separate training trace's loads
    (read if --train-trace is given, else None)."""
    from moetrace.predictors.base import PredictorOptions
    from moetrace.trace import read_trace

    for name, value in (("--sw-window", sw_window), ("--bucket", bucket)):
        if value is not None and value <= 0:
            raise ParameterError(f"{name} must be a positive number of steps, got {value}")
    train = read_trace(train_trace).loads() if train_trace else None
    return PredictorOptions(window=sw_window, bucket=bucket, order=parse_order(order),
                            seed=seed), train
