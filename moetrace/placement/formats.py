"""A plan in the files serving engines read: SGLang's map and vllm-ascend's expert map.

- SGLang's ``--init-expert-location`` (``compute_initial_expert_location_metadata`` and
  ``init_by_mapping`` in python/sglang/srt/eplb/expert_location.py): ``{"physical_to_logical_map":
  [[expert of each slot] per model layer]}``; a layer the trace does not hold (a dense one)
  gets the trivial map, slot p -> expert p % E.
- vllm-ascend's static EPLB (``expert_map_path``, read by ``expert_file_to_tensor`` in
  vllm_ascend/eplb/core/eplb_utils.py): ``{"moe_layer_count": L, "layer_list": [{"layer_id",
  "device_count", "device_list": [{"device_id", "device_expert": [experts of the device's
  slots, in order]}]}]}``. The loader takes the MoE layers in order (``layer_list[i]`` is
  the i-th MoE layer, counted from 0 over MoE layers only), builds one rectangular array of
  every device's ``device_expert`` (so every device lists the same number of slots), and
  counts the redundant experts as the slots beyond the logical experts. A plan's slot p on
  GPU g = p // (R / G) is that device's slot p % (R / G).

:func:`read_vllm_ascend_map` reads such a file back with the loader's rules (a test holds
the writer to it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from moetrace.errors import ParameterError


def sglang_map(phy2log: np.ndarray, layers: list[int], source_layers: list[int] | None,
               n_experts: int) -> dict[str, Any]:
    """``{"physical_to_logical_map": [...]}``: one row per model layer (``source_layers``
    where the trace knows the model's numbers, else its own ``layers``)."""
    numbers = source_layers or layers
    slots = phy2log.shape[1]
    rows = np.tile(np.arange(slots) % n_experts, (max(numbers) + 1, 1))
    rows[np.asarray(numbers)] = phy2log
    return {"physical_to_logical_map": rows.tolist()}


def vllm_ascend_map(phy2log: np.ndarray, gpus: int) -> dict[str, Any]:
    """vllm-ascend's expert map of a plan of every MoE layer (the trace's layers, in order):
    ``device_expert`` of device g lists the experts of its slots."""
    layers, slots = phy2log.shape
    per_device = phy2log.reshape(layers, gpus, slots // gpus)
    return {"moe_layer_count": layers,
            "layer_list": [{"layer_id": layer, "device_count": gpus,
                            "device_list": [{"device_id": g,
                                             "device_expert": per_device[layer, g].tolist()}
                                            for g in range(gpus)]}
                           for layer in range(layers)]}


def load(source: str | Path | dict[str, Any], what: str) -> tuple[Any, Path | None]:
    """A JSON document given as a path to its file or already parsed (vllm-ascend maps here,
    plans in ``document``), with its path (None for a parsed one); a file that cannot be read
    or parsed is a ParameterError naming it and what was expected."""
    path = None if isinstance(source, dict) else Path(source)
    try:
        return (source if path is None else json.loads(path.read_text())), path
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ParameterError(f"cannot read {what} ({exc})", path=path) from None


def read_vllm_ascend_map(source: str | Path | dict[str, Any], n_experts: int
                         ) -> np.ndarray:
    """``phy2log [L, R]`` of a vllm-ascend expert map, read as its loader reads it: layer i
    is ``layer_list[i]``, its devices' ``device_expert`` lists stacked in order (each device
    the same number of slots), every slot an expert below ``n_experts`` and every expert
    somewhere (the loader maps each expert to the slots holding it). A ParameterError says
    what does not fit."""
    doc, path = load(source, "an expert map")

    def bad(problem: str) -> ParameterError:
        return ParameterError(f"not a vllm-ascend expert map: {problem}", path=path)

    try:
        count = int(doc["moe_layer_count"])
        layer_list = doc["layer_list"]
        rows = []
        for i in range(count):
            devices = layer_list[i]["device_list"]
            rows.append([list(map(int, d["device_expert"])) for d in devices])
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from None
    if not rows:
        raise bad("no MoE layers")
    widths = {len(device) for layer in rows for device in layer}
    if len(widths) != 1 or len({len(layer) for layer in rows}) != 1:
        raise bad("every layer needs the same devices, each with the same number of slots")
    table = np.asarray(rows, dtype=np.int64)  # [L, devices, slots per device]
    if ((table < 0) | (table >= n_experts)).any():
        raise bad(f"a slot names an expert outside 0..{n_experts - 1}")
    phy2log = table.reshape(table.shape[0], -1)
    present = np.zeros((phy2log.shape[0], n_experts), dtype=bool)
    present[np.arange(phy2log.shape[0])[:, None], phy2log] = True
    if not present.all():
        raise bad("an expert has no slot in some layer")
    return phy2log
