"""The lazy trace reader: one file, a glob, a directory of parts or hive rank partitions.

``read_trace`` finds the files (:mod:`moetrace.trace.files`), checks that each is an intact
Parquet file (:mod:`moetrace.trace.integrity`) and how its rows are laid out
(:mod:`moetrace.trace.layout`), validates every row in one streaming pass
(:mod:`moetrace.trace.validate`), and returns a :class:`Trace`: the lazy long frame, its
dimensions, metadata and a small per-(step, layer) summary. Dense arrays come from
:meth:`Trace.loads`, a step range at a time. A trace is read exactly as written or refused:
every problem is a :class:`TraceError` naming the file, and so is any error the Parquet
libraries raise while reading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from moetrace.errors import TraceError
from moetrace.trace.files import reading, resolve_files
from moetrace.trace.integrity import LEVELS, check_file
from moetrace.trace.layout import FileLayout, scan
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS, TraceMetadata
from moetrace.trace.shares import Loads, sampling_interval
from moetrace.trace.validate import validate

__all__ = ["Trace", "TraceHandle", "read_trace", "reading", "resolve_files"]

_STEP_CHUNK_ROWS = 8_000_000  # rows gathered per pass when filling dense arrays


@dataclass(frozen=True)
class Trace:
    """A validated trace: lazy rows plus what is known about them without loading them."""

    path: str
    lazy: pl.LazyFrame  # canonical long rows: step, layer, expert, tokens[, rank] (not summed)
    metadata: TraceMetadata
    n_layers: int
    n_experts: int
    has_rank: bool
    step_totals: pl.DataFrame  # one row per (step, layer): tokens routed in total, sorted
    files: tuple[Path, ...] = ()
    #: whether every file carries page checksums (written by moetrace): corruption of its
    #: data pages is then detected on read; a foreign file's corruption cannot be.
    checksummed: bool = False
    #: what every file's checksums cover (the weakest file's; moetrace.trace.integrity):
    #: "file" (every byte: any corruption is detected), "pages" (written by a moetrace
    #: before the whole-file checksum: data pages and metadata) or "none".
    integrity: str = "none"

    @cached_property
    def steps(self) -> np.ndarray:
        """Sorted unique step numbers present in the trace."""
        return self.step_totals.get_column(STEP).unique(maintain_order=True).to_numpy()

    @property
    def n_steps(self) -> int:
        return len(self.steps)

    @cached_property
    def interval(self) -> int:
        """The sampling interval in training steps (1: every step recorded)."""
        return sampling_interval(self.steps)

    @cached_property
    def gaps(self) -> list[tuple[int, int]]:
        """Missing samples as (first missing step, last missing step), inclusive: where two
        recorded steps are further apart than the sampling interval."""
        steps, every = self.steps, self.interval
        jumps = np.nonzero(np.diff(steps) > every)[0]
        return [(int(steps[i] + every), int(steps[i + 1] - every)) for i in jumps]

    def handle(self) -> "TraceHandle":
        """What another process needs to open this trace again without validating it again
        (picklable: paths, dimensions, metadata and the validated totals)."""
        return TraceHandle(self.path, self.files, self.metadata, self.n_layers,
                           self.n_experts, self.has_rank, self.step_totals, self.checksummed,
                           self.integrity)

    @cached_property
    def counts_dtype(self) -> np.dtype:
        """The narrowest integer type that holds every count: int32 when every (step, layer)
        total fits it (a count is at most its step's total), else int64."""
        largest = int(self.step_totals.get_column(TOKENS).max() or 0)
        return np.dtype(np.int32) if largest < 2**31 else np.dtype(np.int64)

    @cached_property
    def _totals(self) -> np.ndarray:
        """(L, T) tokens per layer and step, from the validation pass."""
        t = np.searchsorted(self.steps, self.step_totals.get_column(STEP).to_numpy())
        out = np.zeros((self.n_layers, self.n_steps), dtype=np.int64)
        out[self.step_totals.get_column(LAYER).to_numpy(), t] = \
            self.step_totals.get_column(TOKENS).to_numpy()
        return out

    def loads(self, layers: list[int] | None = None, start: int | None = None,
              stop: int | None = None) -> Loads:
        """Dense token counts for ``layers`` over steps ``start <= step <= stop`` (inclusive).

        Counts of several ranks add up in integers (exact; validation bounds every step's
        total). What is gathered is checked against the validation pass's totals, so a file
        that changed since :func:`read_trace` opened it is refused rather than misread.
        """
        layer_ids = tuple(range(self.n_layers)) if layers is None else tuple(int(x) for x in layers)
        bad = [x for x in layer_ids if not 0 <= x < self.n_layers]
        if bad:
            raise TraceError(f"no layer {bad[0]}: the trace has layers 0..{self.n_layers - 1}",
                             path=self.path)
        steps = self.steps
        lo = 0 if start is None else int(np.searchsorted(steps, start, side="left"))
        hi = len(steps) if stop is None else int(np.searchsorted(steps, stop, side="right"))
        steps = steps[lo:hi]
        counts = np.zeros((len(layer_ids), len(steps), self.n_experts), dtype=self.counts_dtype)
        if len(steps) == 0:
            return Loads(steps, counts, layer_ids)
        layer_pos = np.full(self.n_layers, -1, dtype=np.int64)
        layer_pos[list(layer_ids)] = np.arange(len(layer_ids))
        rows_per_step = max(1, len(self.step_totals) // max(1, self.n_steps)) * self.n_experts
        chunk = max(1, _STEP_CHUNK_ROWS // rows_per_step)
        with reading(self.path):
            for i in range(0, len(steps), chunk):
                part = steps[i:i + chunk]
                frame = (
                    self.lazy.filter(pl.col(STEP).is_between(int(part[0]), int(part[-1])))
                    .filter(pl.col(LAYER).is_in(list(layer_ids)))
                    .select(STEP, LAYER, EXPERT, TOKENS)
                    .collect()
                )
                t = np.searchsorted(part, frame.get_column(STEP).to_numpy())
                flat = (layer_pos[frame.get_column(LAYER).to_numpy()] * len(part) + t)
                flat = flat * self.n_experts + frame.get_column(EXPERT).to_numpy()
                block = np.zeros(len(layer_ids) * len(part) * self.n_experts, dtype=np.int64)
                tokens = frame.get_column(TOKENS).to_numpy()
                if self.has_rank:  # partial counts of several ranks add up, in integers
                    np.add.at(block, flat, tokens)
                else:
                    block[flat] = tokens
                counts[:, i:i + chunk] = block.reshape(len(layer_ids), len(part), self.n_experts)
        if not np.array_equal(counts.sum(axis=2), self._totals[list(layer_ids), lo:hi]):
            raise TraceError("its rows changed since it was opened, or it is corrupt: the "
                             "counts read do not add up to the validated totals", path=self.path)
        return Loads(steps, counts, layer_ids)


@dataclass(frozen=True)
class TraceHandle:
    """A validated trace as plain data (see :meth:`Trace.handle`): a worker process or a Ray
    task opens it with :meth:`open` without a second validation pass. What it reads is still
    checked against the validated totals (``Trace.loads``), so a file changed in between is
    refused."""

    path: str
    files: tuple[Path, ...]
    metadata: TraceMetadata
    n_layers: int
    n_experts: int
    has_rank: bool
    step_totals: pl.DataFrame
    checksummed: bool
    integrity: str = "none"

    def open(self) -> Trace:
        layouts = [FileLayout.of(file) for file in self.files]
        return Trace(self.path, scan(layouts, self.has_rank, self.path), self.metadata,
                     self.n_layers, self.n_experts, self.has_rank, self.step_totals,
                     self.files, self.checksummed, self.integrity)


def read_trace(path: str | Path) -> Trace:
    """Open and validate a trace; raise :class:`TraceError` naming the file and the problem."""
    label = str(path)
    files = resolve_files(label)
    metadata, level = TraceMetadata(), LEVELS[0]
    layouts = []
    for file in files:
        found, file_level = check_file(file)
        level = max(level, file_level, key=LEVELS.index)
        if found is not None and metadata == TraceMetadata():
            metadata = found
        layouts.append(FileLayout.of(file))
    has_rank = any(layout.rank is not None for layout in layouts)
    n_layers, n_experts, step_totals = validate(layouts, has_rank, metadata, label)
    return Trace(label, scan(layouts, has_rank, label), metadata, n_layers, n_experts,
                 has_rank, step_totals, tuple(files), level != "none", level)
