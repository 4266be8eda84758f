"""SmartMoE / FastMoE expert-selection tables: ``table_iter{N}_rank{R}.log``.

The "expert selection dataset" published with the SmartMoE paper (repository
thu-pacman/SmartMoE-AE, folder ``moe_trace/``) holds, for every sampled training iteration N
and data-parallel rank R, one file whose lines are ``layer:[[counts of every expert] per
micro-batch]`` (counts written as floats, ``292.0``). Its own reader is ``load_gate_history``
in ``src/fastmoe/tests/test_smart_exchange.py``: split each line at ':' and parse the JSON
list. Here: steps are the iteration numbers (training steps, so a table every 10th
iteration is a sampled trace), ranks are kept as ranks (the reader sums them), micro-batches
are summed per iteration. Iterations that lack some rank's file, and ranks that lack some
layer, are reported (and refused: a step must hold every rank's tokens); the counts must be
whole numbers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl

from moetrace.errors import TraceError, first_line
from moetrace.record.importers.common import ImportOptions, Imported
from moetrace.trace.schema import EXPERT, LAYER, RANK, STEP, TOKENS

FILE = re.compile(r"^table_iter(\d+)_rank(\d+)\.log$")


def table_files(src: Path) -> dict[tuple[int, int], Path]:
    """(iteration, rank) -> file, for a directory of tables or one table file."""
    files = [src] if src.is_file() else sorted(src.iterdir()) if src.is_dir() else []
    found = {}
    for file in files:
        match = FILE.match(file.name)
        if match:
            found[(int(match.group(1)), int(match.group(2)))] = file
    if not found:
        raise TraceError("no table_iter{N}_rank{R}.log files (SmartMoE/FastMoE expert "
                         "selection tables)", path=src)
    return found


def parse_table(file: Path) -> np.ndarray:
    """(layers, experts) counts of one table, micro-batches summed."""
    layers: dict[int, np.ndarray] = {}
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"unreadable: {first_line(exc)}", path=file) from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        head, sep, body = line.partition(":")
        try:
            layer = int(head)
            tables = np.asarray(json.loads(body), dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise TraceError(f"line {number} is not 'layer:[[counts] per micro-batch]': "
                             f"{first_line(exc)}", path=file) from None
        if not sep or tables.ndim != 2 or tables.size == 0:
            raise TraceError(f"line {number} is not 'layer:[[counts] per micro-batch]'",
                             path=file)
        if layer in layers:
            raise TraceError(f"layer {layer} appears twice", path=file)
        layers[layer] = tables.sum(axis=0)
    if not layers:
        raise TraceError("empty table", path=file)
    order = sorted(layers)
    widths = {layers[k].shape[0] for k in order}
    if len(widths) != 1:
        raise TraceError(f"layers have different expert counts: {sorted(widths)}", path=file)
    if order != list(range(len(order))):
        raise TraceError(f"layers are not numbered 0..{len(order) - 1}: {order[:8]}", path=file)
    counts = np.stack([layers[k] for k in order])
    if not np.isfinite(counts).all() or (counts < 0).any() or (counts != np.floor(counts)).any():
        raise TraceError("counts must be whole non-negative numbers", path=file)
    return counts.astype(np.int64)


def read_rows(src: Path, options: ImportOptions | None = None) -> Imported:
    """Every table as long rows with its iteration as the step and its rank as the rank."""
    files = table_files(src)
    iterations = sorted({it for it, _ in files})
    ranks = sorted({r for _, r in files})
    missing = [(it, r) for it in iterations for r in ranks if (it, r) not in files]
    if missing:
        it, r = missing[0]
        raise TraceError(f"{len(missing)} table(s) missing, first: iteration {it}, rank {r} "
                         f"(every iteration needs all {len(ranks)} ranks' tables)", path=src)
    frames, shape = [], None
    for (it, rank), file in sorted(files.items()):
        counts = parse_table(file)
        if shape is None:
            shape = counts.shape
        elif counts.shape != shape:
            raise TraceError(f"{counts.shape[0]} layers x {counts.shape[1]} experts, but the "
                             f"first table has {shape[0]} x {shape[1]}", path=file)
        n_layers, n_experts = counts.shape
        frames.append(pl.DataFrame({
            STEP: np.full(counts.size, it, dtype=np.int64),
            LAYER: np.repeat(np.arange(n_layers, dtype=np.int64), n_experts),
            EXPERT: np.tile(np.arange(n_experts, dtype=np.int64), n_layers),
            TOKENS: counts.reshape(-1),
            RANK: np.full(counts.size, rank, dtype=np.int64),
        }))
    gaps = np.diff(iterations)
    extra = {"steps_are": "training iterations", "ranks": len(ranks),
             "iterations": len(iterations)}
    if len(gaps) and len(set(gaps.tolist())) == 1:
        extra["every"] = int(gaps[0])
    return Imported(pl.concat(frames).lazy(), n_experts=shape[1], extra=extra)
