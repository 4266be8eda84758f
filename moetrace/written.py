"""What a command wrote: a trace output described from its own files.

``record`` and ``convert`` report it with ``--json`` / ``--json-out``: the path, the trace's
dimensions and steps (from the reader's validation pass over what was written), and the rows,
Parquet files and bytes on disk (from the files' footers and sizes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from moetrace.trace.read import Trace, read_trace


@dataclass(frozen=True)
class WrittenTrace:
    """A trace as written: its dimensions, steps, and what it takes on disk."""

    path: str
    layers: int
    experts: int  # per layer
    first_step: int
    last_step: int
    steps: int  # steps held (a sampled trace holds every ``interval``-th)
    interval: int
    rows: int  # rows in its Parquet files (a recording's ranks not summed)
    parts: int  # Parquet files: 1 for a .parquet output
    bytes: int  # their size on disk

    @classmethod
    def of(cls, trace: Trace, *, path: str | Path | None = None,
           files: Sequence[str | Path] | None = None) -> WrittenTrace:
        """``trace`` as written; or, given ``path`` and ``files``, what was written there with
        ``trace``'s layers, experts and steps (a conversion of it)."""
        files = [Path(f) for f in (trace.files if files is None else files)]
        return cls(path=trace.path if path is None else str(path), layers=trace.n_layers,
                   experts=trace.n_experts,
                   first_step=int(trace.steps[0]), last_step=int(trace.steps[-1]),
                   steps=trace.n_steps, interval=trace.interval,
                   rows=sum(pq.read_metadata(f).num_rows for f in files), parts=len(files),
                   bytes=sum(f.stat().st_size for f in files))

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "layers": self.layers, "experts": self.experts,
                "steps": {"first": self.first_step, "last": self.last_step,
                          "count": self.steps, "interval": self.interval},
                "rows": self.rows, "parts": self.parts, "bytes": self.bytes}

    @staticmethod
    def nothing_json(path: str | Path) -> dict[str, Any]:
        """The same keys for an output where no trace was written (null but the path)."""
        return {"path": str(path), "layers": None, "experts": None, "steps": None,
                "rows": None, "parts": None, "bytes": None}


def written_trace(path: str | Path) -> WrittenTrace:
    """Read back the trace at ``path`` (file or directory of parts) and describe it."""
    return WrittenTrace.of(read_trace(path))
