"""TraceRecorder: per-step expert counts kept on the device, written as crash-safe Parquet parts.

Counts of every micro-batch of a step add up in one ``(layers, experts)`` buffer on the
device the router runs on; :meth:`TraceRecorder.step` copies that buffer to the host once
and zeroes it. Every ``flush_every`` steps a complete part file
``out_dir/rank=R/part-NNNNNN.parquet`` is written under a temporary name and renamed, so a
job killed at any moment leaves only readable parts and loses at most the unflushed steps.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from moetrace.defaults import FLUSH_EVERY
from moetrace.errors import (
    MoetraceError,
    OutputError,
    OutputExistsError,
    ParameterError,
    first_line,
)
from moetrace.output import check_output, discard, mark, move_aside, restore
from moetrace.record.phase import Phase, forward_phase
from moetrace.trace.schema import (
    EXPERT,
    LAYER,
    MAX_RANK,
    MAX_STEP,
    RANK,
    STEP,
    TOKENS,
    TraceMetadata,
)
from moetrace.trace.write import TraceWriter, write_layer_groups

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None

_PART = re.compile(r"^part-(\d+)\.parquet$")

#: Environment variables that carry a process's global rank / world size, most specific first
#: (torchrun and DeepSpeed set RANK; SLURM, Open MPI and MPICH/Intel MPI their own).
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK")
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")
#: Steps kept in memory while part files cannot be written, per flush interval: beyond
#: ``flush_every * MAX_BUFFERED_FLUSHES`` the oldest steps are dropped (and counted as lost).
MAX_BUFFERED_FLUSHES = 20


def _first_int_env(names: tuple[str, ...]) -> tuple[str, int] | None:
    """The first of ``names`` set in the environment, with its integer value."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return name, int(value)
            except ValueError:
                raise ParameterError(f"environment variable {name}={value!r} is not an "
                                     "integer") from None
    return None


def rank_from_env() -> int:
    """This process's global rank from the launcher's environment (0 when not distributed)."""
    found = _first_int_env(RANK_VARIABLES)
    return 0 if found is None else found[1]


def world_size_from_env() -> int:
    found = _first_int_env(WORLD_SIZE_VARIABLES)
    return 1 if found is None else found[1]


def checked_rank_and_world(rank: int | None) -> tuple[int, int]:
    """Rank and world size, from the arguments or the launcher's environment, validated before
    training starts: integers, world size >= 1, 0 <= rank < world size, rank fits the trace's
    rank column. Errors name the variable."""
    rank_source = _first_int_env(RANK_VARIABLES) if rank is None else ("rank", int(rank))
    world_source = _first_int_env(WORLD_SIZE_VARIABLES)
    rank_name, rank_value = rank_source or ("rank", 0)
    world_name, world = world_source or ("world size", 1)

    def named(name: str, value: int) -> str:
        return f"{name}={value}" if name in RANK_VARIABLES + WORLD_SIZE_VARIABLES else \
            f"{name} {value}"

    if world < 1:
        raise ParameterError(f"{named(world_name, world)}: the world size must be at least 1")
    if not 0 <= rank_value <= MAX_RANK:
        raise ParameterError(f"{named(rank_name, rank_value)}: a rank must be between 0 and "
                             f"{MAX_RANK:,}")
    if world_source is not None and rank_value >= world:
        raise ParameterError(f"{named(rank_name, rank_value)} is not below "
                             f"{named(world_name, world)}")
    return rank_value, world


def eval_dir(out_dir: str | Path) -> Path:
    """Where ``count_eval=True`` puts eval counts: a sibling ``<out_dir>-eval`` trace."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + "-eval")


def recorded_ranks(out_dir: str | Path) -> int:
    """How many ``rank=R`` directories under ``out_dir`` hold at least one part file."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return 0
    return sum(1 for p in out_dir.glob("rank=*") if any(p.glob("part-*.parquet")))


@contextmanager
def recording_in_place(out_dirs: Sequence[str | Path], *, force: bool = False) -> Iterator[None]:
    """The output policy of a recording, written in place as it grows (docs/cli.md, "Outputs").

    Every one of ``out_dirs`` (the trace, and its eval sibling if any) is checked before
    anything runs; with ``force`` a previous recording there (a directory moetrace wrote) is
    moved aside. When the block ends, however it ends, the previous recordings are deleted if
    the new one (the first of ``out_dirs``) holds parts, or put back if it holds none. So a
    run killed mid-way keeps the parts it wrote, and a run that recorded nothing leaves the
    previous recording as it was.
    """
    paths = [Path(p) for p in out_dirs]
    for path in paths:
        check_output(path, kind="dir", force=force)
    asides = [(path, move_aside(path, force=force)) for path in paths]
    try:
        yield
    finally:
        recorded = recorded_ranks(paths[0]) > 0
        for path, aside in asides:
            discard(aside) if recorded else restore(aside, path)


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
        # ids outside 0..E-1 (padding, dropped tokens, "zero experts") go to a spare bin that
        # is cut off: no data-dependent shape, so no device sync
        flat = torch.where((flat >= 0) & (flat < n_experts), flat, n_experts)
        counts = torch.bincount(flat, minlength=n_experts + 1)[:n_experts]
        row = self._row(layer, n_experts, flat.device)
        row.add_(counts.to(row.device, non_blocking=True))

    def take(self) -> np.ndarray:
        """The step's counts on the host (one device-to-host copy); the buffer is zeroed."""
        host = self.buffer.to("cpu", copy=True).numpy()
        self.buffer.zero_()
        self.dirty = False
        return host


class _RankLock:
    """An exclusive lock on one rank directory for a recorder's life (``.lock``, flock).

    The kernel releases it when the process ends, however it ends, so a lock left by a killed
    process is simply taken over; a live second writer of the same rank is refused.
    """

    def __init__(self, directory: Path):
        self.path = directory / ".lock"
        self._fd: int | None = None
        if fcntl is None:  # no flock on this platform: no protection, nothing to hold
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # a file system without locks (some NFS mounts): record, unprotected
                os.close(fd)
                warnings.warn(f"moetrace: cannot lock {self.path} ({exc.strerror}); "
                              "recording without protection against a second writer of "
                              "this rank", RuntimeWarning, stacklevel=3)
                return
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputError(f"another recorder ({holder}) is writing this rank's parts; "
                              "record into another directory", path=directory) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None


class _Parts:
    """Buffered host counts of one trace (train or eval) and its part files under rank=R/.

    Writing a part never raises: a failure (full disk, permissions, a vanished directory)
    is warned about once, the steps stay buffered (up to a bound) and the write is retried
    at the next flush; :attr:`lost` counts the steps that could not be kept.
    """

    def __init__(self, root: Path, rank: int, flush_every: int,
                 metadata: Callable[["_Parts"], TraceMetadata], append: bool = False,
                 skipped: dict[int, str] | None = None):
        self.dir = root / f"rank={rank}"
        self.metadata = metadata
        self.rank = rank
        self.flush_every = flush_every
        self.steps: list[int] = []
        self.counts: list[np.ndarray] = []
        self.written = 0  # parts written
        self.lost = 0  # steps dropped because parts could not be written
        self.failure: str | None = None  # why the last write failed (None: it worked)
        self.first_totals: np.ndarray | None = None  # per-layer tokens of the first step
        self._since_attempt = 0
        self.skipped = skipped if skipped is not None else {}
        self._dropped: tuple[int, ...] | None = None  # layers left out, fixed by the first part
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            mark(root, written_by_recorder=True)
        except OSError as exc:
            raise OutputError(f"cannot create the trace directory: {exc.strerror or exc}",
                              path=self.dir) from None
        self.lock = _RankLock(self.dir)
        existing = sorted(self.dir.glob("part-*.parquet"))
        if existing and not append:
            self.lock.release()
            raise OutputExistsError(f"holds {len(existing)} part files already; record into a "
                                    "new directory, or append to it (append=True)",
                                    path=self.dir)
        numbers = [int(m.group(1)) for p in existing if (m := _PART.match(p.name))]
        self.written = max(numbers) + 1 if numbers else 0

    def append(self, step: int, counts: np.ndarray) -> None:
        self.steps.append(step)
        self.counts.append(counts)
        self._since_attempt += 1
        if self.first_totals is None:
            self.first_totals = counts.sum(axis=1)
        if self._since_attempt >= self.flush_every:  # a flush, or a retry while writes fail
            self.flush()

    def flush(self) -> Path | None:
        """Write the buffered steps as one complete part file (atomically); None if empty or
        the write failed (the steps then stay buffered for the next attempt)."""
        self._since_attempt = 0
        if not self.steps:
            return None
        path = self.dir / f"part-{self.written:06d}.parquet"
        try:
            block, n_layers, n_experts = self._block()
            self.dir.mkdir(parents=True, exist_ok=True)
            steps = np.asarray(self.steps, dtype=np.int64)
            meta = replace(self.metadata(self), n_layers=n_layers, n_experts=n_experts)
            with TraceWriter(path, meta, with_rank=True) as writer:
                write_layer_groups(writer, steps, range(n_layers), block.transpose(1, 0, 2),
                                   self.rank)
        except Exception as exc:  # noqa: BLE001 - nothing may reach the training loop
            self._failed(path, exc)
            return None
        if self.failure is not None:
            warnings.warn(f"moetrace: recording to {self.dir} works again; wrote "
                          f"{len(self.steps)} buffered steps", RuntimeWarning, stacklevel=3)
            self.failure = None
        self.written += 1
        self.steps, self.counts = [], []
        return path

    def _block(self) -> tuple[np.ndarray, int, int]:
        """The buffered steps as ``block[step, layer, expert]``, with the layers and experts
        they span.

        Layers skipped before the first part was written are left out and the others
        renumbered 0..; that choice is kept for every later part (a layer skipped later
        keeps its number, and the trace shows where it stopped)."""
        n_layers = max(c.shape[0] for c in self.counts)
        n_experts = max(c.shape[1] for c in self.counts)
        block = np.zeros((len(self.steps), n_layers, n_experts), dtype=np.int64)
        for i, c in enumerate(self.counts):
            block[i, :c.shape[0], :c.shape[1]] = c
        if self._dropped is None:
            self._dropped = tuple(sorted(k for k in self.skipped if k < n_layers)) \
                if self.written == 0 else ()
        if self._dropped:
            keep = [i for i in range(n_layers) if i not in self._dropped]
            block = block[:, keep]
            n_layers = len(keep)
        return block, n_layers, n_experts

    def _failed(self, path: Path, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        if self.failure is None:
            warnings.warn(f"moetrace: cannot write {path} ({reason}); training goes on, the "
                          f"steps stay in memory and the write is retried every "
                          f"{self.flush_every} steps", RuntimeWarning, stacklevel=3)
        self.failure = reason
        bound = self.flush_every * MAX_BUFFERED_FLUSHES
        if len(self.steps) > bound:
            drop = len(self.steps) - bound
            self.lost += drop
            self.steps, self.counts = self.steps[drop:], self.counts[drop:]

    def close(self) -> None:
        """Last flush; whatever still cannot be written is lost (and counted)."""
        self.flush()
        self.lost += len(self.steps)
        self.steps, self.counts = [], []
        self.lock.release()


class TraceRecorder:
    """Accumulates per-layer, per-expert token counts per optimizer step into a trace directory.

    ``add_counts`` / ``add_indices`` take counts or routed expert ids of one MoE layer for one
    micro-batch (on any device; nothing leaves the device). Which forwards count is decided
    by :func:`moetrace.record.phase.forward_phase`: recomputation never, eval passes only
    with ``count_eval=True`` (into the sibling trace :func:`eval_dir`). ``step()`` ends a
    step; a ``step()`` with no training forward since the last one does nothing, so an
    explicit call and the optimizer hook of :func:`moetrace.record.attach` never make empty
    steps.

    Steps are numbered from ``first_step`` (for a run resumed from a checkpoint, with
    ``append=True`` to add parts to the earlier ones); ``every=k`` records every k-th step
    only (steps ``first_step``, ``first_step + k``, ...: a sampled trace whose step numbers
    are still training steps). Bad settings are refused here, before training starts; once
    recording, nothing it does raises into the training loop: failures to write are warned
    about and retried, and :attr:`steps_lost` says what could not be kept.
    """

    def __init__(self, out_dir: str | Path, *, flush_every: int = FLUSH_EVERY,
                 rank: int | None = None,
                 metadata: TraceMetadata | None = None, count_eval: bool = False,
                 every: int = 1, first_step: int = 0, append: bool = False):
        if flush_every < 1:
            raise ParameterError(f"flush_every must be at least 1, got {flush_every}")
        if every < 1:
            raise ParameterError(f"every must be at least 1 (record every k-th step), got {every}")
        if not 0 <= first_step <= MAX_STEP:
            raise ParameterError(f"first_step must be between 0 and {MAX_STEP:,}, got "
                                 f"{first_step}")
        self.out_dir = Path(out_dir)
        self.rank, self.world_size = checked_rank_and_world(rank)
        self.flush_every = flush_every
        self.count_eval = count_eval
        self.every = every
        self.metadata = replace(metadata or TraceMetadata(), source="recorded")
        self.first_step = first_step
        self.step_number = first_step  # the training step being counted now
        self.steps_recorded = 0
        self.closed = False
        self._active = False  # a training forward ran since the last step()
        self._step_failure: str | None = None
        self._step_lost = 0
        self.skipped_layers: dict[int, str] = {}
        self._train = _DeviceCounts()
        self._eval = _DeviceCounts()
        self._train_parts = _Parts(self.out_dir, self.rank, flush_every,
                                   lambda parts: self._metadata(parts, "train"), append=append,
                                   skipped=self.skipped_layers)
        self._eval_parts = None
        if count_eval:
            try:
                self._eval_parts = _Parts(eval_dir(self.out_dir), self.rank, flush_every,
                                          lambda parts: self._metadata(parts, "eval"),
                                          append=append, skipped=self.skipped_layers)
            except MoetraceError:
                self._train_parts.lock.release()
                raise

    # -- counting (hot path: device ops only) -------------------------------------------------
    def counter_for(self, training: bool | None) -> _DeviceCounts | None:
        """The buffer a forward running now counts into (train or eval), or None to skip it.

        None once closed, so a model still hooked keeps running (e.g. a final evaluation),
        and None for training forwards of steps that ``every`` does not sample.
        """
        if self.closed:
            return None
        phase: Phase | None = forward_phase(training)
        if phase == "train":
            self._active = True
            return self._train if self._sampled() else None
        return self._eval if phase == "eval" and self.count_eval else None

    def _sampled(self) -> bool:
        return (self.step_number - self.first_step) % self.every == 0

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

    def skip_layer(self, layer: int, reason: str) -> None:
        """Leave MoE layer ``layer`` out from now on (its hook could not read it), with one
        warning. While no part is written yet the layers after it are renumbered, so the
        trace stays a valid one of the layers that could be read; the skipped layers and why
        are in the metadata (``skipped_layers``)."""
        if layer in self.skipped_layers:
            return
        self.skipped_layers[layer] = reason
        warnings.warn(f"moetrace: not recording MoE layer {layer}, {reason}; training goes on",
                      RuntimeWarning, stacklevel=3)

    # -- step boundaries and files ------------------------------------------------------------
    def step(self) -> None:
        """End the current optimizer step: one host copy of all layers' counts, buffered.

        Never raises: a failure (a device error while copying, say) is warned about once and
        the step counted as lost.
        """
        if self.closed or not (self._active or self._train.dirty):
            return
        try:
            if self._eval.dirty and self._eval_parts is not None:
                self._eval_parts.append(self.step_number, self._eval.take())
            if self._train.dirty:
                self._train_parts.append(self.step_number, self._train.take())
                self.steps_recorded += 1
        except Exception as exc:  # noqa: BLE001 - nothing may reach the training loop
            self._step_lost += 1
            if self._step_failure is None:
                self._step_failure = f"{type(exc).__name__}: {first_line(exc)}"
                warnings.warn(f"moetrace: cannot record step {self.step_number} into "
                              f"{self.out_dir} ({self._step_failure}); training goes on",
                              RuntimeWarning, stacklevel=2)
        self._active = False
        self.step_number += 1

    def _metadata(self, parts: _Parts, phase: Phase) -> TraceMetadata:
        meta = self.metadata
        tokens = meta.tokens_per_step
        if tokens is None and meta.top_k and parts.first_totals is not None:
            tokens = int(parts.first_totals[0]) // meta.top_k * self.world_size
        extra = {**meta.extra, "phase": phase, "rank": self.rank,
                 "world_size": self.world_size, "flush_every": self.flush_every}
        if self.every > 1:
            extra["every"] = self.every
        if self.skipped_layers:
            extra["skipped_layers"] = [{"layer": k, "reason": v}
                                       for k, v in sorted(self.skipped_layers.items())]
        return replace(meta, tokens_per_step=tokens, extra=extra)

    @property
    def steps_lost(self) -> int:
        """Steps counted but not written (parts that could not be written, failed steps)."""
        parts = [self._train_parts] + ([self._eval_parts] if self._eval_parts else [])
        return self._step_lost + sum(p.lost for p in parts)

    def close(self) -> None:
        """Count a pending partial step, write the last parts; safe to call more than once.

        Never raises; if steps could not be written it warns, saying how many were lost."""
        if self.closed:
            return
        try:
            self.step()
            if self._eval.dirty and self._eval_parts is not None:
                self._eval_parts.append(self.step_number, self._eval.take())
        except Exception as exc:  # noqa: BLE001
            self._step_lost += 1
            warnings.warn(f"moetrace: cannot record the last step into {self.out_dir} "
                          f"({type(exc).__name__}: {first_line(exc)})", RuntimeWarning,
                          stacklevel=2)
        for parts in [self._train_parts] + ([self._eval_parts] if self._eval_parts else []):
            parts.close()
        self.closed = True
        if self.steps_lost:
            warnings.warn(f"moetrace: {self.steps_lost} recorded step(s) could not be written "
                          f"to {self.out_dir} and are lost; the parts written are complete "
                          "and readable", RuntimeWarning, stacklevel=2)

    @property
    def parts_written(self) -> int:
        return self._train_parts.written

    def __enter__(self) -> "TraceRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
