"""SGLang expert-distribution dumps (python/sglang/srt/eplb/expert_distribution.py).

Three forms, told apart by what they hold:

- ``stat`` mode, ``expert_distribution_recorder_{time}.pt`` (``_StatAccumulator.dump``):
  ``{"rank", "logical_count": int tensor [forward passes, layers, logical experts],
  "average_utilization_rate_over_window"}``, already summed over ranks. Each forward pass is a
  step; several files (successive dumps) follow each other in time order.
- ``per_token`` mode, ``expert_distribution_recorder_{time}_{rank}.pt``
  (``_DetailAccumulator.dump``): ``{"records": [{"forward_pass_id", "rank",
  "global_physical_count": [layers, physical experts], ...}, ...],
  "last_physical_to_logical_map": [layers, physical experts]}``, one file per rank. Each
  forward pass id is a step; ranks are summed (as SGLang's own ``stat`` mode does) and
  physical experts are added into their logical expert through the map.
- the JSON that ``--init-expert-location`` reads (``compute_initial_expert_location_metadata``
  in python/sglang/srt/eplb/expert_location.py): ``{"logical_count": [[...]]}`` with 2-D
  (one step: counts over the whole recording) or 3-D counts.

``.pt`` files are loaded with ``torch.load(weights_only=True)`` only: a dump is data, never
code, and no message here suggests loading one any other way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from moetrace.errors import MissingExtraError, TraceError, first_line
from moetrace.record.importers.common import ImportOptions, Imported
from moetrace.trace.schema import EXPERT, LAYER, STEP, TOKENS

LAYOUT: dict[str, str] = {}
_TIME = re.compile(r"_(\d+(?:\.\d+)?)(?:_(\d+))?\.(?:pt|json)$")


def dump_files(src: Path) -> list[Path]:
    """``src`` itself, or a directory's ``.pt``/``.json`` dumps ordered by the time in their
    names (then rank)."""
    if not src.is_dir():
        return [src]
    files = [f for f in src.iterdir() if f.suffix in (".pt", ".json") and f.is_file()]
    if not files:
        raise TraceError("directory holds no .pt or .json SGLang dumps", path=src)

    def when(file: Path) -> tuple[float, int, str]:
        match = _TIME.search(file.name)
        if not match:
            return (float("inf"), 0, file.name)
        return (float(match.group(1)), int(match.group(2) or 0), file.name)

    return sorted(files, key=when)


def load_dump(file: Path) -> dict[str, Any]:
    """One dump as a dict: JSON parsed, ``.pt`` loaded with ``weights_only=True``."""
    if file.suffix == ".json":
        try:
            dump = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise TraceError(f"not readable as JSON: {first_line(exc)}", path=file) from None
    else:
        try:
            import torch
        except ImportError:
            raise MissingExtraError("torch", "lstm", "importing SGLang .pt dumps") from None
        try:
            dump = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle and zip errors of foreign or unsafe files vary
            raise TraceError(f"cannot be loaded as data (torch.load with weights_only=True): "
                             f"{first_line(exc)}", path=file) from None
    if not isinstance(dump, dict):
        raise TraceError(f"holds a {type(dump).__name__}, not an SGLang dump (a dict)",
                         path=file)
    return dump


def _integers(value: Any, what: str, dims: tuple[int, ...], file: Path) -> np.ndarray:
    """``value`` (tensor or nested list) as int64 with one of ``dims`` dimensions."""
    array = value.numpy() if hasattr(value, "numpy") and hasattr(value, "dim") else value
    try:
        array = np.asarray(array)
    except ValueError:  # ragged nested lists
        raise TraceError(f"'{what}' is ragged: its rows differ in length", path=file) from None
    if array.ndim not in dims:
        raise TraceError(f"'{what}' must have {' or '.join(map(str, dims))} dimensions, found "
                         f"shape {array.shape}", path=file)
    if array.dtype.kind not in "iu" and not (
            array.dtype.kind == "f" and np.all(np.isfinite(array))
            and np.all(array == np.floor(array))):
        raise TraceError(f"'{what}' must hold whole numbers, found {array.dtype}", path=file)
    return array.astype(np.int64)


def logical_counts(file: Path, dump: dict[str, Any]) -> np.ndarray:
    """``[passes, layers, experts]`` of a ``stat`` dump or ``--init-expert-location`` JSON."""
    if "logical_count" not in dump:
        if "physical_to_logical_map" in dump:
            raise TraceError("a placement (physical_to_logical_map), not counts; import the "
                             "expert distribution dump instead", path=file)
        raise TraceError("no 'logical_count' and no 'records': not an SGLang expert "
                         "distribution dump", path=file)
    count = _integers(dump["logical_count"], "logical_count", (2, 3), file)
    return count[None] if count.ndim == 2 else count


def per_pass_counts(file: Path, dump: dict[str, Any]) -> pl.DataFrame:
    """Rows (step = forward pass id, layer, logical expert, tokens) of one per-token dump."""
    records = dump["records"]
    if not isinstance(records, list) or not records:
        raise TraceError("'records' holds no forward passes", path=file)
    if "last_physical_to_logical_map" not in dump:
        raise TraceError("no 'last_physical_to_logical_map' to map physical experts to "
                         "logical ones", path=file)
    mapping = _integers(dump["last_physical_to_logical_map"], "last_physical_to_logical_map",
                        (2,), file)
    try:
        ids = np.asarray([int(r["forward_pass_id"]) for r in records], dtype=np.int64)
        physical = np.stack([_integers(r["global_physical_count"], "global_physical_count",
                                       (2,), file) for r in records])
    except (KeyError, TypeError) as exc:
        raise TraceError(f"a record lacks forward_pass_id or global_physical_count "
                         f"({first_line(exc)})", path=file) from None
    except ValueError:  # np.stack of differing shapes
        raise TraceError("records' global_physical_count differ in shape", path=file) from None
    if physical.shape[1:] != mapping.shape:
        raise TraceError(f"global_physical_count is {physical.shape[1]} layers x "
                         f"{physical.shape[2]} physical experts but the map is "
                         f"{mapping.shape[0]} x {mapping.shape[1]}", path=file)
    if mapping.size and mapping.min() < 0:
        raise TraceError("last_physical_to_logical_map holds a negative expert id", path=file)
    n_passes, n_layers, _ = physical.shape
    n_logical = int(mapping.max()) + 1 if mapping.size else 0
    logical = np.zeros((n_passes, n_layers, n_logical), dtype=np.int64)
    flat = (np.arange(n_layers)[:, None] * n_logical + mapping)  # (layers, physical)
    np.add.at(logical.reshape(n_passes, -1), (slice(None), flat.reshape(-1)),
              physical.reshape(n_passes, -1))
    return _long(ids, logical)


def _long(steps: np.ndarray, counts: np.ndarray) -> pl.DataFrame:
    n_steps, n_layers, n_experts = counts.shape
    return pl.DataFrame({
        STEP: np.repeat(steps.astype(np.int64), n_layers * n_experts),
        LAYER: np.tile(np.repeat(np.arange(n_layers, dtype=np.int64), n_experts), n_steps),
        EXPERT: np.tile(np.arange(n_experts, dtype=np.int64), n_steps * n_layers),
        TOKENS: counts.reshape(-1),
    })


def read_rows(src: Path, options: ImportOptions | None = None) -> Imported:
    """All dumps of ``src`` as steps; empty passes (unused buffer slots) and dense layers (no
    tokens at any step) are left out."""
    dumps = [(file, load_dump(file)) for file in dump_files(src)]
    per_pass = ["records" in dump for _, dump in dumps]
    if any(per_pass) and not all(per_pass):
        raise TraceError("mixes per-token ('records') dumps with stat dumps; import each kind "
                         "on its own", path=src)
    if all(per_pass):
        frames = [per_pass_counts(file, dump) for file, dump in dumps]
        n_experts = max(int(f.get_column(EXPERT).max()) + 1 for f in frames)
        rows = (pl.concat(frames).group_by(STEP, LAYER, EXPERT).agg(pl.col(TOKENS).sum()))
        steps_are = "forward passes (ids of SGLang's forward passes)"
    else:
        arrays = [(file, logical_counts(file, dump)) for file, dump in dumps]
        shape = arrays[0][1].shape[1:]
        for file, array in arrays:
            if array.shape[1:] != shape:
                raise TraceError(f"'logical_count' has {array.shape[1]} layers x "
                                 f"{array.shape[2]} experts, but {arrays[0][0].name} has "
                                 f"{shape[0]} x {shape[1]}", path=file)
        counts = np.concatenate([a for _, a in arrays])  # (passes, layers, experts)
        rows = _long(np.arange(len(counts)), counts)
        n_experts = shape[1]
        steps_are = ("forward passes" if len(counts) > 1 or arrays[0][0].suffix == ".pt"
                     else "one count over the whole recording")
    # unused buffer slots (no tokens at all) and dense layers (never any tokens) are not data
    live = rows.group_by(STEP).agg(pl.col(TOKENS).sum()).filter(pl.col(TOKENS) > 0)
    moe = rows.group_by(LAYER).agg(pl.col(TOKENS).sum()).filter(pl.col(TOKENS) > 0)
    rows = rows.join(live.select(STEP), on=STEP).join(moe.select(LAYER), on=LAYER)
    if rows.height == 0:
        raise TraceError("the dump counts no tokens at all", path=src)
    return Imported(rows.lazy(), n_experts=n_experts,
                    extra={"source_files": len(dumps), "steps_are": steps_are})
