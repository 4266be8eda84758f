"""`moetrace record`: simulate a run, record a real one, train the demo, or import a dump.

Exactly one source per call: ``--simulate PRESET``, ``--demo``, ``--from FORMAT SRC`` or a
training command after ``--``.
"""

from __future__ import annotations

from pathlib import Path

import click

from moetrace.cli.app import command, console, warn
from moetrace.cli.options import PathType
from moetrace.cli.render import safe
from moetrace.errors import ParameterError


@command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@click.option("-o", "--out", type=PathType, metavar="OUT", required=True,
              help="Output trace: a .parquet file, or a directory of rank=R/ parts when "
                   "recording a command (or --demo into a directory).")
@click.option("--simulate", metavar="PRESET",
              help="Simulate a GPT-3-style run: gpt3-125m or gpt3-350m.")
@click.option("--demo", is_flag=True,
              help="Train the small real MoE GPT on CPU and record its load trace.")
@click.option("--from", "from_format", metavar="FORMAT",
              help="Import another tool's dump (SRC follows; formats: docs/importing.md).")
@click.option("--steps", type=int, help="Steps to simulate or train.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed (simulation and demo).")
@click.option("--layers", type=int, help="Override the preset's MoE layers.")
@click.option("--experts", type=int, help="Override experts per layer.")
@click.option("--top-k", type=int, help="Experts per token: overrides the preset, or states it "
              "for an import whose format does not say.")
@click.option("--tokens-per-step", type=int, help="Tokens per layer per step: overrides the "
              "preset, or states it for an import.")
@click.option("--layout", metavar="KEY=SIZE,...", help="Parallel layout of the run that wrote "
              "an import, for per-rank formats (e.g. pp=2,etp=1).")
@click.option("--steps-are", metavar="TEXT", help="What an imported step is, where the format "
              "cannot say (e.g. 'decode steps' for an inference trace).")
@click.option("--flush-every", type=int, default=100, show_default=True,
              help="Steps per part file when recording (crash safety).")
@click.option("--every", type=int, default=1, show_default=True, metavar="K",
              help="Record every K-th training step only (a sampled trace; step numbers stay "
                   "training steps).")
@click.option("--count-eval", is_flag=True,
              help="Also record eval forwards, into the sibling trace OUT-eval.")
@click.option("--force", is_flag=True,
              help="Replace existing outputs (a directory only if moetrace wrote it).")
@click.pass_context
def record(ctx: click.Context, out: Path, simulate: str | None, demo: bool,
           from_format: str | None, steps: int | None, seed: int, layers: int | None,
           experts: int | None, top_k: int | None, tokens_per_step: int | None,
           layout: str | None, steps_are: str | None, flush_every: int, every: int,
           count_eval: bool, force: bool) -> None:
    """Get a trace: simulate one, record a real training run, or import one.

    Record a command:  moetrace record -o DIR -- python train.py --lr 3e-4
    """
    command_args = None if from_format else ctx.args  # with --from, the extra argument is SRC
    sources = [s for s in (simulate, demo or None, from_format, command_args or None) if s]
    if len(sources) != 1:
        raise ParameterError("give exactly one of --simulate PRESET, --demo, --from FORMAT SRC, "
                             "or a training command after --")
    if every != 1 and (simulate or from_format):
        raise ParameterError("--every applies to recording (a command or --demo)")
    if (layout or steps_are) and not from_format:
        raise ParameterError("--layout and --steps-are describe an import (--from FORMAT)")
    if simulate:
        from moetrace.simulate import simulate_trace

        _parquet_file(out)
        path = simulate_trace(out, preset=simulate, steps=steps, seed=seed, layers=layers,
                              experts=experts, top_k=top_k, tokens_per_step=tokens_per_step,
                              force=force)
        console.print(f"wrote simulated trace [bold]{safe(path)}[/]", soft_wrap=True)
    elif from_format:
        _import(from_format, ctx.args, out, experts=experts, top_k=top_k,
                tokens_per_step=tokens_per_step, layout=layout, steps_are=steps_are,
                force=force)
    elif demo:
        _train_demo(out, steps=steps, seed=seed, flush_every=flush_every, every=every,
                    force=force)
    else:
        _record_command(command_args, out, flush_every=flush_every, count_eval=count_eval,
                        every=every, force=force)


def _parquet_file(out: Path) -> None:
    """A trace file is Parquet: an output named otherwise (x.csv) is refused, not misnamed."""
    if out.suffix.lower() != ".parquet":
        raise ParameterError(f"{out}: a trace is written as Parquet; name the output "
                             "*.parquet")


def _record_command(command_args: list[str], out: Path, *, flush_every: int, count_eval: bool,
                    every: int, force: bool) -> None:
    """Run the training command recorded, say where the trace went, pass its exit code on."""
    from moetrace.record import record_command

    run = record_command(command_args, out, flush_every=flush_every, count_eval=count_eval,
                         every=every, force=force)
    if run.trace is None:
        warn(run.problem)
    else:
        t = run.trace
        console.print(f"recorded trace [bold]{safe(run.out_dir)}[/]: {t.n_steps} steps x "
                      f"{t.n_layers} MoE layers x {t.n_experts} experts from {run.ranks} "
                      f"rank(s), {safe(t.metadata.model or 'unknown model')}", soft_wrap=True)
    if run.returncode:
        warn(f"the command exited with status {run.returncode}")
    raise SystemExit(run.returncode)


def _train_demo(out: Path, *, steps: int | None, seed: int, flush_every: int, every: int,
                force: bool) -> None:
    """Train the demo MoE GPT (3000 steps unless told) with a progress bar, then one line."""
    from moetrace.cli.progress import progress_bar
    from moetrace.record import train_demo

    steps = 3000 if steps is None else steps
    with progress_bar("training the demo MoE GPT") as update:
        def progress(done: int, total: int, loss: float) -> None:
            update(done, total, f"loss {loss:.2f}")

        result = train_demo(out, steps=steps, seed=seed, flush_every=flush_every,
                            every=every, progress=progress, force=force)
    cfg = result.config
    window = max(1, result.steps // 10)  # loss over the first and last tenth of the run
    first, last = result.losses[:window].mean(), result.losses[-window:].mean()
    sampled = f", every {every} steps recorded" if every > 1 else ""
    console.print(f"recorded demo trace [bold]{safe(result.path)}[/]: {result.steps} steps x "
                  f"{cfg.n_layers} MoE layers x {cfg.n_experts} experts (top-{cfg.top_k}, "
                  f"{cfg.tokens_per_step} tokens/step{sampled}); loss {first:.2f} -> {last:.2f}", soft_wrap=True)


def _import(fmt: str, args: list[str], out: Path, *, experts: int | None, top_k: int | None,
            tokens_per_step: int | None, layout: str | None, steps_are: str | None,
            force: bool) -> None:
    """Convert another tool's dump (SRC, the one extra argument) into a canonical trace."""
    from moetrace.record.importers import import_trace

    if len(args) != 1:
        raise ParameterError(f"--from {fmt} takes exactly one SRC (file or directory), "
                             f"got {len(args)}")
    _parquet_file(out)
    path = import_trace(fmt, args[0], out, n_experts=experts, top_k=top_k,
                        tokens_per_step=tokens_per_step, layout=layout, steps_are=steps_are,
                        force=force)
    console.print(f"imported {fmt} dump {safe(args[0])} into [bold]{safe(path)}[/]", soft_wrap=True)
