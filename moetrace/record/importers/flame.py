"""FLAME-MoE routing traces: ``actives/iter_NNNN/layer_NN.parquet``.

Published with the FLAME-MoE models (dataset CMU-FLAME/FLAME-MoE-Traces, per model a folder
such as ``flame-moe-290m/``): for each training checkpoint (iteration) and MoE layer, one
Parquet file with a row per token, ``indices`` (``list<int16>``, the top-k routed expert ids)
and ``scores`` (``list<float16>``, their router probabilities). Every checkpoint routes the same
fixed sample of tokens, so a step here is a checkpoint, not a training step's batch: the trace
shows how the router's load moves over training, sampled at the checkpoints. Layer numbers
are the transformer layers (2-9 in the 290M model; the first is dense). Only ``indices`` is
read, in record batches, and counted with numpy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from moetrace.errors import TraceError, first_line
from moetrace.record.importers.common import ImportOptions, Imported
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS

LAYOUT: dict[str, str] = {}
ITER = re.compile(r"^iter_(\d+)$")
LAYER_FILE = re.compile(r"^layer_(\d+)\.parquet$")
BATCH_ROWS = 1 << 20
MAX_EXPERTS = 1 << 16


def layer_files(src: Path) -> dict[tuple[int, int], Path]:
    """(iteration, layer) -> file under ``src`` (a model folder, its actives/, or one iter_N)."""
    if (src / "actives").is_dir():
        src = src / "actives"
    if ITER.match(src.name) and src.is_dir():
        iter_dirs = [src]
    elif src.is_dir():
        iter_dirs = [d for d in sorted(src.iterdir()) if d.is_dir() and ITER.match(d.name)]
    else:
        iter_dirs = []
    found = {}
    for folder in iter_dirs:
        step = int(ITER.match(folder.name).group(1))
        for file in folder.iterdir():
            match = LAYER_FILE.match(file.name)
            if match:
                found[(step, int(match.group(1)))] = file
    if not found:
        raise TraceError("no actives/iter_N/layer_NN.parquet files (FLAME-MoE traces)",
                         path=src)
    return found


def count_file(file: Path) -> tuple[np.ndarray, int, int]:
    """(counts per expert id, tokens, top-k) of one layer file, streamed by record batches."""
    try:
        parquet = pq.ParquetFile(file)
        column = parquet.schema_arrow.field("indices")
    except KeyError:
        raise TraceError("no 'indices' column", path=file) from None
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"not a Parquet file: {first_line(exc)}", path=file) from None
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
            or pa.types.is_fixed_size_list(column.type)) or \
            not pa.types.is_integer(column.type.value_type):
        raise TraceError(f"'indices' must be a list of integer ids, found {column.type}",
                         path=file)
    counts = np.zeros(0, dtype=np.int64)
    tokens, top_k = 0, None
    try:
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=["indices"]):
            lists = batch.column(0)
            if lists.null_count:
                raise TraceError("a token without 'indices'", path=file)
            lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
            if lengths.size and (lengths.min() != lengths.max()
                                 or (top_k is not None and lengths[0] != top_k)):
                raise TraceError("tokens differ in how many experts they chose", path=file)
            top_k = int(lengths[0]) if lengths.size else top_k
            ids = pc.list_flatten(lists)
            if ids.null_count:
                raise TraceError("a null expert id", path=file)
            ids = ids.to_numpy(zero_copy_only=False).astype(np.int64)
            if ids.size and (ids.min() < 0 or ids.max() >= MAX_EXPERTS):
                raise TraceError(f"expert id {ids.min() if ids.min() < 0 else ids.max()} out "
                                 "of range", path=file)
            found = np.bincount(ids, minlength=counts.size)
            found[:counts.size] += counts
            counts, tokens = found, tokens + len(lists)
    except (pa.ArrowException, OSError) as exc:
        raise TraceError(f"unreadable: {first_line(exc)}", path=file) from None
    if tokens == 0:
        raise TraceError("holds no tokens", path=file)
    return counts, tokens, top_k


def read_rows(src: Path, options: ImportOptions | None = None) -> Imported:
    files = layer_files(src)
    rows, tokens, top_ks = [], set(), set()
    for (step, layer), file in sorted(files.items()):
        counts, n, k = count_file(file)
        tokens.add(n)
        top_ks.add(k)
        rows.append(pl.DataFrame({STEP: np.full(counts.size, step, dtype=np.int64),
                                  LAYER: np.full(counts.size, layer, dtype=np.int64),
                                  EXPERT: np.arange(counts.size, dtype=np.int64),
                                  TOKENS: counts}))
    if len(top_ks) > 1:
        raise TraceError(f"layers differ in experts per token ({sorted(top_ks)})", path=src)
    return Imported(pl.concat(rows).lazy(), top_k=top_ks.pop(),
                    tokens_per_step=max(tokens) if len(tokens) == 1 else None,
                    extra={"source_files": len(files),
                           "steps_are": "checkpoints (iterations), each routing the same "
                                        "fixed sample of tokens"})
