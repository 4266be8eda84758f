"""`moetrace record`: simulate a run, record a real one, train the demo, or import a dump.

Exactly one source per call: ``--simulate PRESET``, ``--demo``, ``--from FORMAT SRC`` or a
training command after ``--``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from moetrace.cli.app import app, console
from moetrace.errors import ParameterError


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def record(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("-o", "--out", help="Output trace file (.parquet) or "
                                      "directory (recording a command writes rank=R/ parts).")],
    simulate: Annotated[Optional[str], typer.Option(
        "--simulate", metavar="PRESET",
        help="Simulate a GPT-3-style run: gpt3-125m or gpt3-350m.")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="Train the small real MoE GPT on CPU and record its load trace.")] = False,
    from_format: Annotated[Optional[str], typer.Option(
        "--from", metavar="FORMAT",
        help="Import another tool's dump: megatron-router-trace, sglang or csv (SRC follows).")
    ] = None,
    steps: Annotated[Optional[int], typer.Option(help="Steps to simulate or train.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (simulation and demo).")] = 0,
    layers: Annotated[Optional[int], typer.Option(help="Override the preset's MoE layers.")] = None,
    experts: Annotated[Optional[int], typer.Option(help="Override experts per layer.")] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Override top-k.")] = None,
    tokens_per_step: Annotated[Optional[int], typer.Option(
        "--tokens-per-step", help="Override tokens per layer per step.")] = None,
    flush_every: Annotated[int, typer.Option(
        "--flush-every", help="Steps per part file when recording (crash safety).")] = 100,
    count_eval: Annotated[bool, typer.Option(
        "--count-eval", help="Also record eval forwards, into the sibling trace DIR-eval.")
    ] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace a previous recording in DIR.")] = False,
) -> None:
    """Get a trace: simulate one, record a real training run, or import one.

    Record a command:  moetrace record -o DIR -- python train.py --lr 3e-4
    """
    command = None if from_format else ctx.args  # with --from, the extra argument is SRC
    sources = [s for s in (simulate, demo or None, from_format, command or None) if s]
    if len(sources) != 1:
        raise ParameterError("give exactly one of --simulate PRESET, --demo, --from FORMAT SRC, "
                             "or a training command after --")
    if simulate:
        from moetrace.simulate import simulate_trace

        path = simulate_trace(out, preset=simulate, steps=steps, seed=seed, layers=layers,
                              experts=experts, top_k=top_k, tokens_per_step=tokens_per_step)
        console.print(f"wrote simulated trace [bold]{path}[/]")
    elif from_format:
        _import(from_format, ctx.args, out, experts=experts)
    elif demo:
        _train_demo(out, steps=steps, seed=seed, flush_every=flush_every)
    else:
        _record_command(command, out, flush_every=flush_every, count_eval=count_eval, force=force)


def _record_command(command: list[str], out: Path, *, flush_every: int, count_eval: bool,
                    force: bool) -> None:
    """Run the training command recorded, say where the trace went, pass its exit code on."""
    from moetrace.record import record_command

    run = record_command(command, out, flush_every=flush_every, count_eval=count_eval,
                         force=force)
    if run.trace is None:
        typer.echo(f"moetrace: warning: {run.problem}", err=True)
    else:
        t = run.trace
        console.print(f"recorded trace [bold]{run.out_dir}[/]: {t.n_steps} steps x "
                      f"{t.n_layers} MoE layers x {t.n_experts} experts from {run.ranks} "
                      f"rank(s), {t.metadata.model or 'unknown model'}", soft_wrap=True)
    if run.returncode:
        typer.echo(f"moetrace: the command exited with status {run.returncode}", err=True)
    raise SystemExit(run.returncode)


def _train_demo(out: Path, *, steps: int | None, seed: int, flush_every: int) -> None:
    """Train the demo MoE GPT (3000 steps unless told) with a progress bar, then one line."""
    from rich.progress import Progress

    from moetrace.record import train_demo

    steps = 3000 if steps is None else steps
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("training the demo MoE GPT", total=steps)

        def progress(done: int, total: int, loss: float) -> None:
            bar.update(task, completed=done, description=f"training the demo MoE GPT, "
                                                         f"loss {loss:.2f}")

        result = train_demo(out, steps=steps, seed=seed, flush_every=flush_every,
                            progress=progress)
    cfg = result.config
    window = max(1, result.steps // 10)  # loss over the first and last tenth of the run
    first, last = result.losses[:window].mean(), result.losses[-window:].mean()
    console.print(f"recorded demo trace [bold]{result.path}[/]: {result.steps} steps x "
                  f"{cfg.n_layers} MoE layers x {cfg.n_experts} experts (top-{cfg.top_k}, "
                  f"{cfg.tokens_per_step} tokens/step); loss {first:.2f} -> {last:.2f}")


def _import(fmt: str, args: list[str], out: Path, *, experts: int | None) -> None:
    """Convert another tool's dump (SRC, the one extra argument) into a canonical trace."""
    from moetrace.record.importers import import_trace

    if len(args) != 1:
        raise ParameterError(f"--from {fmt} takes exactly one SRC (file or directory), "
                             f"got {len(args)}")
    path = import_trace(fmt, args[0], out, n_experts=experts)
    console.print(f"imported {fmt} dump {args[0]} into [bold]{path}[/]")
