"""The demo trainer: train the small MoE GPT on CPU and record its real expert-load trace.

The text is the Python standard library's own source (present on any machine with Python),
read as bytes. Recording goes through the same :class:`TraceRecorder` and :func:`attach`
a user's run would use: the router of every layer is hooked, and the global optimizer-step
hook ends each step. Deterministic for a given seed, Python version and thread count.
"""

from __future__ import annotations

import math
import sysconfig
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from moetrace.defaults import FLUSH_EVERY
from moetrace.errors import ParameterError
from moetrace.output import check_output
from moetrace.record.demo_model import DemoConfig, DemoMoEGPT, TopKRouter
from moetrace.record.recorder import recording_in_place
from moetrace.trace.read import read_trace
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS, TraceMetadata
from moetrace.trace.write import write_trace

#: Bytes of standard-library source used as the corpus (the first files in path order).
CORPUS_BYTES = 4_000_000
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}

#: progress(step done, total steps, training loss of that step)
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class DemoResult:
    """What a demo run produced: the trace (None if not recorded) and its learning curve."""

    path: Path | None
    config: DemoConfig
    steps: int
    seed: int
    losses: np.ndarray  # (steps,) next-byte cross-entropy of each step's batch
    aux_losses: np.ndarray  # (steps,) balance loss (1.0 = perfectly balanced)
    step_seconds: np.ndarray  # (steps,) wall time of each optimizer step
    corpus: str

    @property
    def loss_change(self) -> tuple[float, float]:
        """Mean training loss over the first and over the last tenth of the run."""
        window = max(1, self.steps // 10)
        return float(self.losses[:window].mean()), float(self.losses[-window:].mean())


def stdlib_corpus(root: str | Path | None = None, max_bytes: int = CORPUS_BYTES) -> torch.Tensor:
    """The bytes of ``.py`` files under ``root`` (default: the standard library), path order."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py")
                   if not _SKIP_DIRS.intersection(p.relative_to(root).parts))
    chunks, size = [], 0
    for file in files:
        if size >= max_bytes:
            break
        data = file.read_bytes()[: max_bytes - size]
        chunks.append(data)
        size += len(data)
    if size < 10_000:
        raise ParameterError(f"found only {size} bytes of Python source under {root}; "
                             "the demo needs a standard library with .py sources")
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8).long()


def learning_rate(step: int, steps: int, peak: float) -> float:
    """Linear warm-up (100 steps, a tenth of short runs), then cosine decay to peak / 10."""
    warmup = min(100, max(1, steps // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def train_demo(out: str | Path | None, *, steps: int = 3000, seed: int = 0,
               config: DemoConfig = DemoConfig(), lr: float = 3e-3, flush_every: int = FLUSH_EVERY,
               threads: int = 1, corpus: torch.Tensor | None = None,
               progress: Progress | None = None, force: bool = False,
               every: int = 1) -> DemoResult:
    """Train the demo MoE GPT for ``steps`` optimizer steps, recording its loads into ``out``.

    ``out`` is a directory the recorder writes as it goes, as it would for a user's run:
    ``rank=0/part-NNNNNN.parquet``, one complete part every ``flush_every`` steps, so that
    ``moetrace watch`` can follow the training and a killed run leaves its parts (a
    recording's output policy, :func:`~moetrace.record.recorder.recording_in_place`). If
    ``out`` ends in ``.parquet`` it is one consolidated file instead, which appears complete
    at the end. An existing ``out`` is replaced only with ``force`` (moetrace.output).
    ``out=None`` trains without recording (the benchmark's baseline). Torch runs on
    ``threads`` threads for the call (one by default: the same numbers on every machine, and
    no thread contention).
    """
    if steps < 1:
        raise ParameterError(f"--steps must be at least 1, got {steps}")
    consolidate = out is not None and Path(out).suffix == ".parquet"
    if consolidate:
        out = Path(out)
        check_output(out, kind="file", force=force)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with ExitStack() as stack:
            parts_dir = None
            if consolidate:
                parts_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(
                    prefix=f".{out.name}.parts-", dir=out.parent if out.parent.is_dir()
                    else None)))
            elif out is not None:
                parts_dir = out = Path(out)
                stack.enter_context(recording_in_place([out], force=force))
            result = _train(parts_dir, steps, seed, config, lr, flush_every, corpus, progress,
                            every)
            if consolidate:
                _consolidate(parts_dir, out, force)
        return replace(result, path=out)
    finally:
        torch.set_num_threads(previous_threads)


def _train(parts_dir: Path | None, steps: int, seed: int, config: DemoConfig, lr: float,
           flush_every: int, corpus: torch.Tensor | None,
           progress: Progress | None, every: int = 1) -> DemoResult:
    data = stdlib_corpus() if corpus is None else corpus
    torch.manual_seed(seed)
    model = DemoMoEGPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    batches = torch.Generator().manual_seed(seed)
    offsets = torch.arange(config.seq_len + 1)
    recorder = handle = None
    losses, aux_losses, seconds = (np.zeros(steps) for _ in range(3))
    try:
        if parts_dir is not None:
            recorder, handle = _start_recording(model, parts_dir, config, seed, flush_every,
                                                every)
        for step in range(steps):
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, steps, lr)
            first = torch.randint(0, len(data) - config.seq_len - 1, (config.batch_size,),
                                  generator=batches)
            batch = data[first[:, None] + offsets]
            lm, aux = model(batch[:, :-1], batch[:, 1:])
            (lm + config.aux_loss_coef * aux).backward()
            optimizer.step()  # the recorder's optimizer hook ends the step here
            optimizer.zero_grad(set_to_none=True)
            seconds[step] = time.perf_counter() - start
            losses[step], aux_losses[step] = lm.item(), aux.item()
            if progress is not None:
                progress(step + 1, steps, losses[step])
    finally:
        if handle is not None:  # the optimizer-step hook is global: never leave it behind
            handle.remove()
        if recorder is not None:
            recorder.close()
    return DemoResult(parts_dir, config, steps, seed, losses, aux_losses, seconds,
                      corpus=f"{len(data)} bytes of Python standard-library source")


def _start_recording(model: DemoMoEGPT, parts_dir: Path, config: DemoConfig, seed: int,
                     flush_every: int, every: int = 1):
    """A recorder on ``parts_dir`` attached to every router of ``model``, as a user would."""
    from moetrace.record import TraceRecorder, attach, from_indices

    metadata = TraceMetadata(
        model="moetrace-demo-moe-gpt", n_layers=config.n_layers, n_experts=config.n_experts,
        top_k=config.top_k, tokens_per_step=config.tokens_per_step,
        extra={"demo_config": asdict(config), "seed": seed, "corpus": "python-stdlib"})
    recorder = TraceRecorder(parts_dir, flush_every=flush_every, rank=0, metadata=metadata,
                             every=every)
    reader = from_indices(lambda module, inputs, output: output[1], n_experts=config.n_experts)
    return recorder, attach(model, recorder, modules={TopKRouter: reader})


def _consolidate(parts_dir: Path, dest: Path, force: bool) -> None:
    """Merge the recorder's part files into one canonical trace file, atomically."""
    trace = read_trace(parts_dir)
    frame = (trace.lazy.group_by(STEP, LAYER, EXPERT).agg(pl.col(TOKENS).sum())
             .sort(STEP, LAYER, EXPERT).collect())
    extra = {k: v for k, v in trace.metadata.extra.items() if k != "rank"}
    write_trace(frame, dest, replace(trace.metadata, extra=extra), force=force)
