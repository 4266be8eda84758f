"""Importers: other tools' routing dumps into the canonical trace format, one module per format.

The registry is explicit: format name -> the module that reads its files into long rows
(``read_rows(src, options)``) and names the ``--layout`` keys it reads (``LAYOUT``).
:func:`import_trace` checks, renumbers and writes them (see ``common.write_imported``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

from moetrace.errors import ParameterError, TraceError
from moetrace.record.importers import (csv, flame, megatron_router_trace, megatron_tpe, sglang,
                                       smartmoe, trtllm)
from moetrace.record.importers.common import (ImportOptions, Imported, check_layout,
                                              parse_layout, write_imported)

#: format name (as given to ``moetrace record --from``) -> its module
IMPORTERS: dict[str, ModuleType] = {
    "megatron-tokens-per-expert": megatron_tpe,
    "megatron-router-trace": megatron_router_trace,
    "sglang": sglang,
    "trtllm": trtllm,
    "flame-moe": flame,
    "smartmoe": smartmoe,
    "csv": csv,
}


def import_trace(fmt: str, src: str | Path, out: str | Path, *,
                 n_experts: int | None = None, top_k: int | None = None,
                 tokens_per_step: int | None = None, layout: Mapping[str, int] | str | None = None,
                 steps_are: str | None = None, force: bool = False) -> Path:
    """Convert the dump ``src`` in format ``fmt`` into one canonical trace file ``out``.

    ``n_experts`` sets the experts per layer where the format does not say (Megatron traces
    hold only the ids routed to); otherwise it is the largest id seen + 1. ``top_k`` and
    ``tokens_per_step`` go into the metadata (the format's own values where it has them).
    ``layout`` states the run's parallel layout for per-rank formats (``{"pp": 2}`` or
    ``"pp=2"``); ``steps_are`` says what a step is where the format cannot (``"decode steps"``).
    """
    if fmt not in IMPORTERS:
        raise ParameterError(f"unknown import format '{fmt}' (known: {', '.join(IMPORTERS)})")
    module = IMPORTERS[fmt]
    options = ImportOptions(n_experts=n_experts, layout=parse_layout(layout)
                            if layout is None or isinstance(layout, str) else dict(layout))
    check_layout(options, fmt, getattr(module, "LAYOUT", {}))
    src = Path(src)
    if not src.exists():
        raise TraceError("no such file or directory", path=src)
    return write_imported(module.read_rows(src, options), out, src, fmt, n_experts=n_experts,
                          top_k=top_k, tokens_per_step=tokens_per_step, steps_are=steps_are,
                          force=force)


__all__ = ["IMPORTERS", "ImportOptions", "Imported", "import_trace"]
