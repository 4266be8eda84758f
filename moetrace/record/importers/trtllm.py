"""TensorRT-LLM expert statistics: ``rank{R}.safetensors`` and ``meta_info.json``.

Written by ``ExpertStatistic`` (tensorrt_llm/_torch/expert_statistic.py) when the server runs
with ``EXPERT_STATISTIC_ITER_RANGE=start-stop`` and ``EXPERT_STATISTIC_PATH=DIR``: each rank
saves one safetensors file whose keys are ``"{iter}_{layer}"`` and whose values are the
bincount of that rank's selected experts (length ``num_experts``), added up over the calls of
that iteration; rank 0 writes ``meta_info.json`` with ``num_experts`` and
``num_experts_per_token``. Steps are the executor's iterations (inference forward passes).

Ranks that route the same tokens (attention tensor parallelism: every rank sees every
token) write identical files; those are read once, and ranks holding different tokens
(attention data parallelism) are summed. Read with ``safetensors.numpy``: no code is loaded.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import polars as pl

from moetrace.errors import TraceError, first_line
from moetrace.record.importers.common import ImportOptions, Imported
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS

LAYOUT: dict[str, str] = {}
FILE = re.compile(r"^rank(\d+)\.safetensors$")
KEY = re.compile(r"^(\d+)_(\d+)$")


def rank_files(src: Path) -> dict[int, Path]:
    files = sorted(src.iterdir()) if src.is_dir() else [src]
    found = {int(m.group(1)): f for f in files if (m := FILE.match(f.name))}
    if not found:
        raise TraceError("no rank{R}.safetensors files (TensorRT-LLM expert statistics)",
                         path=src)
    return found


def meta_info(src: Path) -> dict:
    meta = (src if src.is_dir() else src.parent) / "meta_info.json"
    if not meta.exists():
        return {}
    try:
        info = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TraceError(f"not readable as JSON: {first_line(exc)}", path=meta) from None
    if not isinstance(info, dict):
        raise TraceError("must hold a JSON object", path=meta)
    for key in ("num_experts", "num_experts_per_token"):
        value = info.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise TraceError(f"'{key}' must be a positive integer, found {value!r}", path=meta)
    return info


def read_file(file: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(iterations, layers, counts[keys, experts]) of one rank file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(file)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise TraceError(f"not a safetensors file: {first_line(exc)}", path=file) from None
    keys = sorted(tensors)
    bad = next((k for k in keys if not KEY.match(k)), None)
    if bad is not None:
        raise TraceError(f"key '{bad}' is not '{{iteration}}_{{layer}}'", path=file)
    shapes = {tensors[k].shape for k in keys}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise TraceError(f"counts must be 1-D and of one length, found shapes "
                         f"{sorted(shapes)[:3]}", path=file)
    counts = np.stack([tensors[k] for k in keys]) if keys else np.zeros((0, 0))
    if counts.dtype.kind not in "iu":
        raise TraceError(f"counts must be integers, found {counts.dtype}", path=file)
    parts = np.array([KEY.match(k).groups() for k in keys], dtype=np.int64).reshape(-1, 2)
    return parts[:, 0], parts[:, 1], counts.astype(np.int64)


def read_rows(src: Path, options: ImportOptions | None = None) -> Imported:
    files = rank_files(src)
    info = meta_info(src)
    seen: dict[str, int] = {}
    frames = []
    for rank, file in sorted(files.items()):
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        if digest in seen:
            continue  # the same tokens as an earlier rank (attention tensor parallel)
        seen[digest] = rank
        iters, layers, counts = read_file(file)
        if counts.size == 0:
            raise TraceError("holds no counts", path=file)
        n_keys, n_experts = counts.shape
        frames.append(pl.DataFrame({
            STEP: np.repeat(iters, n_experts), LAYER: np.repeat(layers, n_experts),
            EXPERT: np.tile(np.arange(n_experts, dtype=np.int64), n_keys),
            TOKENS: counts.reshape(-1)}))
    return Imported(pl.concat(frames).lazy(), top_k=info.get("num_experts_per_token"),
                    n_experts=info.get("num_experts"),
                    extra={"source_files": len(files), "distinct_ranks": len(seen),
                           "steps_are": "inference iterations (executor forward steps)"})
