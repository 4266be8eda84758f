"""SGLang expert-distribution dumps: ``expert_distribution_recorder_{time}.pt`` files.

In ``stat`` mode SGLang's recorder (python/sglang/srt/eplb/expert_distribution.py) saves
``{"rank": int, "logical_count": int tensor [forward passes, layers, logical experts],
"average_utilization_rate_over_window": float | None}``, already summed over ranks. Each
forward pass becomes one step. Files are loaded with ``torch.load(weights_only=True)`` only:
a dump is data, never code. Several files (successive dumps) follow each other in time order.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from moetrace.errors import MissingExtraError, TraceError, first_line
from moetrace.record.importers.common import Imported
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS

_TIME = re.compile(r"_(\d+(?:\.\d+)?)(?:_\d+)?\.pt$")


def dump_files(src: Path) -> list[Path]:
    """``src`` itself, or a directory's ``.pt`` dumps ordered by the time in their names."""
    if not src.is_dir():
        return [src]
    files = list(src.glob("*.pt"))
    if not files:
        raise TraceError("directory holds no .pt files", path=src)

    def when(file: Path) -> tuple[float, str]:
        match = _TIME.search(file.name)
        return (float(match.group(1)) if match else float("inf"), file.name)

    return sorted(files, key=when)


def load_logical_count(file: Path) -> np.ndarray:
    """The ``logical_count[passes, layers, experts]`` array of one dump, loaded safely."""
    try:
        import torch
    except ImportError:
        raise MissingExtraError("torch", "lstm", "importing SGLang .pt dumps") from None
    try:
        dump = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle and zip errors of foreign or unsafe files vary
        raise TraceError(f"cannot be loaded with torch.load(weights_only=True): "
                         f"{first_line(exc)}", path=file) from None
    if isinstance(dump, dict) and "records" in dump:
        raise TraceError("a per-token ('records') dump; import the 'stat' mode dump "
                         "(--expert-distribution-recorder-mode stat)", path=file)
    count = dump.get("logical_count") if isinstance(dump, dict) else None
    if not isinstance(count, torch.Tensor):
        raise TraceError("no 'logical_count' tensor: not an SGLang expert distribution dump",
                         path=file)
    if count.dim() != 3 or count.is_floating_point() or count.is_complex():
        raise TraceError(f"'logical_count' must be an integer tensor [passes, layers, "
                         f"experts], found {tuple(count.shape)} {count.dtype}", path=file)
    return count.to(torch.int64).numpy()


def read_rows(src: Path) -> Imported:
    """All dumps as consecutive steps; empty passes (unused buffer slots) and dense layers
    (no tokens at any step) are left out."""
    arrays = [(file, load_logical_count(file)) for file in dump_files(src)]
    shape = arrays[0][1].shape[1:]
    for file, array in arrays:
        if array.shape[1:] != shape:
            raise TraceError(f"'logical_count' has {array.shape[1]} layers x "
                             f"{array.shape[2]} experts, but {arrays[0][0].name} has "
                             f"{shape[0]} x {shape[1]}", path=file)
    counts = np.concatenate([a for _, a in arrays])  # (passes, layers, experts)
    passes = np.flatnonzero(counts.sum(axis=(1, 2)) > 0)
    layers = np.flatnonzero(counts[passes].sum(axis=(0, 2)) > 0)
    block = counts[np.ix_(passes, layers)]
    n_steps, n_layers, n_experts = block.shape
    rows = pl.DataFrame({
        STEP: np.repeat(passes.astype(np.int64), n_layers * n_experts),
        LAYER: np.tile(np.repeat(layers.astype(np.int64), n_experts), n_steps),
        EXPERT: np.tile(np.arange(n_experts, dtype=np.int64), n_steps * n_layers),
        TOKENS: block.reshape(-1),
    })
    return Imported(rows.lazy(), n_experts=shape[1], extra={"source_files": len(arrays),
                                        "steps_are": "forward passes"})
