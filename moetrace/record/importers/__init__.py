"""Importers: other tools' routing dumps into the canonical trace format, one module per format.

The registry is explicit: format name -> the module function that reads its files into long
rows. :func:`import_trace` checks, renumbers and writes them (see ``common.write_imported``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from moetrace.errors import ParameterError, TraceError
from moetrace.record.importers import csv, megatron_router_trace, sglang, smartmoe
from moetrace.record.importers.common import Imported, write_imported

#: format name (as given to ``moetrace record --from``) -> reader of its files
IMPORTERS: dict[str, Callable[[Path], Imported]] = {
    "megatron-router-trace": megatron_router_trace.read_rows,
    "sglang": sglang.read_rows,
    "csv": csv.read_rows,
    "smartmoe": smartmoe.read_rows,
}


def import_trace(fmt: str, src: str | Path, out: str | Path, *,
                 n_experts: int | None = None, top_k: int | None = None,
                 tokens_per_step: int | None = None, force: bool = False) -> Path:
    """Convert the dump ``src`` in format ``fmt`` into one canonical trace file ``out``.

    ``n_experts`` sets the experts per layer where the format does not say (Megatron traces
    hold only the ids routed to); otherwise it is the largest id seen + 1. ``top_k`` and
    ``tokens_per_step`` go into the metadata (the format's own values where it has them).
    """
    if fmt not in IMPORTERS:
        raise ParameterError(f"unknown import format '{fmt}' (known: {', '.join(IMPORTERS)})")
    src = Path(src)
    if not src.exists():
        raise TraceError("no such file or directory", path=src)
    return write_imported(IMPORTERS[fmt](src), out, src, fmt, n_experts=n_experts,
                          top_k=top_k, tokens_per_step=tokens_per_step, force=force)


__all__ = ["IMPORTERS", "Imported", "import_trace"]
