"""TraceRecorder: per-step expert counts kept on the device, written as crash-safe Parquet parts.

Counts of every micro-batch of a step add up in one ``(layers, experts)`` buffer on the
device the router runs on; :meth:`TraceRecorder.step` copies that buffer to the host once
and zeroes it. Every ``flush_every`` steps a complete part file
``out_dir/rank=R/part-NNNNNN.parquet`` is written under a temporary name and renamed, so a
job killed at any moment leaves only readable parts and loses at most the unflushed steps.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from moetrace.errors import OutputExistsError, ParameterError
from moetrace.record.phase import Phase, forward_phase
from moetrace.trace.schema import EXPERT, LAYER, RANK, STEP, TOKENS, TraceMetadata
from moetrace.trace.write import write_trace

#: Environment variables that carry a process's global rank / world size, most specific first
#: (torchrun and DeepSpeed set RANK; SLURM, Open MPI and MPICH/Intel MPI their own).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


def _first_int_env(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                raise ParameterError(f"environment variable {name}={value!r} is not an integer")
    return default


def rank_from_env() -> int:
    """This process's global rank from the launcher's environment (0 when not distributed)."""
    return _first_int_env(RANK_VARIABLES, 0)


def world_size_from_env() -> int:
    return _first_int_env(WORLD_SIZE_VARIABLES, 1)


def eval_dir(out_dir: str | Path) -> Path:
    """Where ``count_eval=True`` puts eval counts: a sibling ``<out_dir>-eval`` trace."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + "-eval")


class _DeviceCounts:
    """A growing ``(layers, experts)`` int64 buffer on the device; adds without host syncs."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.dirty = False

    def _row(self, layer: int, n_experts: int, device: torch.device) -> torch.Tensor:
        buf = self.buffer
        if buf is None or layer >= buf.shape[0] or n_experts > buf.shape[1]:
            shape = (max(layer + 1, 0 if buf is None else buf.shape[0]),
                     max(n_experts, 0 if buf is None else buf.shape[1]))
            grown = torch.zeros(shape, dtype=torch.int64, device=device if buf is None
                                else buf.device)
            if buf is not None:
                grown[:buf.shape[0], :buf.shape[1]] = buf
            self.buffer = buf = grown
        self.dirty = True
        return buf[layer, :n_experts]

    def add_counts(self, layer: int, counts: torch.Tensor) -> None:
        counts = counts.detach().reshape(-1)
        row = self._row(layer, counts.shape[0], counts.device)
        row.add_(counts.to(row.device, torch.int64, non_blocking=True))

    def add_indices(self, layer: int, indices: torch.Tensor, n_experts: int) -> None:
        flat = indices.detach().reshape(-1)
        if flat.dtype not in (torch.int64, torch.int32):
            flat = flat.to(torch.int64)
        counts = torch.bincount(flat, minlength=n_experts)[:n_experts]
        row = self._row(layer, n_experts, flat.device)
        row.add_(counts.to(row.device, non_blocking=True))

    def take(self) -> np.ndarray:
        """The step's counts on the host (one device-to-host copy); the buffer is zeroed."""
        host = self.buffer.to("cpu", copy=True).numpy()
        self.buffer.zero_()
        self.dirty = False
        return host


class _Parts:
    """Buffered host counts of one trace (train or eval) and its part files under rank=R/."""

    def __init__(self, root: Path, rank: int, flush_every: int,
                 metadata: Callable[["_Parts"], TraceMetadata]):
        self.dir = root / f"rank={rank}"
        self.metadata = metadata
        self.rank = rank
        self.flush_every = flush_every
        self.steps: list[int] = []
        self.counts: list[np.ndarray] = []
        self.written = 0  # parts written
        self.first_totals: np.ndarray | None = None  # per-layer tokens of the first step
        existing = sorted(self.dir.glob("part-*.parquet")) if self.dir.is_dir() else []
        if existing:
            raise OutputExistsError(f"holds {len(existing)} part files already; record into a "
                                    "new directory", path=self.dir)

    def append(self, step: int, counts: np.ndarray) -> Path | None:
        self.steps.append(step)
        self.counts.append(counts)
        if self.first_totals is None:
            self.first_totals = counts.sum(axis=1)
        return self.flush() if len(self.steps) >= self.flush_every else None

    def flush(self) -> Path | None:
        """Write the buffered steps as one complete part file (atomically); None if empty."""
        if not self.steps:
            return None
        n_layers = max(c.shape[0] for c in self.counts)
        n_experts = max(c.shape[1] for c in self.counts)
        block = np.zeros((len(self.steps), n_layers, n_experts), dtype=np.int64)
        for i, c in enumerate(self.counts):
            block[i, :c.shape[0], :c.shape[1]] = c
        frame = _long_rows(np.asarray(self.steps, dtype=np.int64), block, self.rank)
        path = self.dir / f"part-{self.written:06d}.parquet"
        write_trace(frame, path, replace(self.metadata(self), n_layers=n_layers,
                                         n_experts=n_experts))
        self.written += 1
        self.steps, self.counts = [], []
        return path


def _long_rows(steps: np.ndarray, block: np.ndarray, rank: int) -> pl.DataFrame:
    """Canonical long rows from ``block[step, layer, expert]`` (vectorised, no Python loop)."""
    n_steps, n_layers, n_experts = block.shape
    return pl.DataFrame({
        STEP: np.repeat(steps, n_layers * n_experts),
        LAYER: np.tile(np.repeat(np.arange(n_layers, dtype=np.int32), n_experts), n_steps),
        EXPERT: np.tile(np.arange(n_experts, dtype=np.int32), n_steps * n_layers),
        TOKENS: block.reshape(-1),
        RANK: np.full(block.size, rank, dtype=np.int32),
    })


class TraceRecorder:
    """Accumulates per-layer, per-expert token counts per optimizer step into a trace directory.

    ``add_counts`` / ``add_indices`` take counts or routed expert ids of one MoE layer for one
    micro-batch (on any device; nothing leaves the device). Which forwards count is decided
    by :func:`moetrace.record.phase.forward_phase`: recomputation never, eval passes only
    with ``count_eval=True`` (into the sibling trace :func:`eval_dir`). ``step()`` ends a
    step; a ``step()`` with nothing counted since the last one does nothing, so an explicit
    call and the optimizer hook of :func:`moetrace.record.attach` never make empty steps.
    """

    def __init__(self, out_dir: str | Path, *, flush_every: int = 100, rank: int | None = None,
                 metadata: TraceMetadata | None = None, count_eval: bool = False):
        if flush_every < 1:
            raise ParameterError(f"flush_every must be at least 1, got {flush_every}")
        self.out_dir = Path(out_dir)
        self.rank = rank_from_env() if rank is None else int(rank)
        if self.rank < 0:
            raise ParameterError(f"rank must be >= 0, got {self.rank}")
        self.world_size = world_size_from_env()
        self.flush_every = flush_every
        self.count_eval = count_eval
        self.metadata = replace(metadata or TraceMetadata(), source="recorded")
        self.steps_recorded = 0
        self.closed = False
        self._train = _DeviceCounts()
        self._eval = _DeviceCounts()
        self._train_parts = _Parts(self.out_dir, self.rank, flush_every,
                                   lambda parts: self._metadata(parts, "train"))
        self._eval_parts = (_Parts(eval_dir(self.out_dir), self.rank, flush_every,
                                   lambda parts: self._metadata(parts, "eval"))
                            if count_eval else None)

    # -- counting (hot path: device ops only) -------------------------------------------------
    def counter_for(self, training: bool | None) -> _DeviceCounts | None:
        """The buffer a forward running now counts into (train or eval), or None to skip it.

        None once closed, so a model still hooked keeps running (e.g. a final evaluation).
        """
        if self.closed:
            return None
        phase: Phase | None = forward_phase(training)
        if phase == "train":
            return self._train
        return self._eval if phase == "eval" and self.count_eval else None

    def add_counts(self, layer: int, counts: torch.Tensor, *, training: bool | None = None) -> None:
        """Add one micro-batch's per-expert counts ``(E,)`` of MoE layer ``layer``.

        ``training`` is the layer's ``module.training``; None leaves it to the grad mode.
        """
        self._check_open()
        counter = self.counter_for(training)
        if counter is not None:
            counter.add_counts(layer, counts)

    def add_indices(self, layer: int, indices: torch.Tensor, n_experts: int, *,
                    training: bool | None = None) -> None:
        """Add the expert ids (any shape, e.g. tokens x top-k) routed by MoE layer ``layer``."""
        self._check_open()
        counter = self.counter_for(training)
        if counter is not None:
            counter.add_indices(layer, indices, n_experts)

    def _check_open(self) -> None:
        if self.closed:
            raise ParameterError(f"the recorder of {self.out_dir} is closed")

    # -- step boundaries and files ------------------------------------------------------------
    def step(self) -> None:
        """End the current optimizer step: one host copy of all layers' counts, buffered."""
        if self.closed or not self._train.dirty:
            return
        if self._eval.dirty and self._eval_parts is not None:
            self._eval_parts.append(self.steps_recorded, self._eval.take())
        self._train_parts.append(self.steps_recorded, self._train.take())
        self.steps_recorded += 1

    def _metadata(self, parts: _Parts, phase: Phase) -> TraceMetadata:
        meta = self.metadata
        tokens = meta.tokens_per_step
        if tokens is None and meta.top_k and parts.first_totals is not None:
            tokens = int(parts.first_totals[0]) // meta.top_k * self.world_size
        return replace(meta, tokens_per_step=tokens,
                       extra={**meta.extra, "phase": phase, "rank": self.rank,
                              "world_size": self.world_size, "flush_every": self.flush_every})

    def close(self) -> None:
        """Count a pending partial step, write the last parts; safe to call more than once."""
        if self.closed:
            return
        self.step()
        if self._eval.dirty and self._eval_parts is not None:
            self._eval_parts.append(self.steps_recorded, self._eval.take())
        self._train_parts.flush()
        if self._eval_parts is not None:
            self._eval_parts.flush()
        self.closed = True

    @property
    def parts_written(self) -> int:
        return self._train_parts.written

    def __enter__(self) -> "TraceRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
