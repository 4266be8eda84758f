"""DeepSpeed MoE: ``deepspeed.moe.sharded_moe.TopKGate``, whose forward returns
``(l_aux, combine_weights, dispatch_mask, exp_counts)``, or with sparse routes (what
``MOELayer`` uses in recent releases) ``(l_aux, capacity, E, indices, locations, gates,
exp_counts)``: ``exp_counts`` is last in both.

``exp_counts`` is the gate's own per-expert count of routed tokens (top-1, top-2 and top-k
gating alike), taken before capacity dropping, i.e. the demand on each expert.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from moetrace.errors import ParameterError
from moetrace.record.adapters.generic import Reader, class_match

CLASSES = {("deepspeed.moe.sharded_moe", "TopKGate")}


#: DeepSpeed releases before this one count only each token's first choice in ``exp_counts``
#: of top-2 gating (the second choice was added to it in 0.14).
FIRST_COMPLETE = (0, 14)


def _exp_counts(module: nn.Module, inputs: tuple, output: Any) -> torch.Tensor:
    return output[-1]


READER = Reader(_exp_counts, counts=True, top_k=lambda m: getattr(m, "k", None))
_match = class_match(CLASSES, READER)


def version_tuple(text: str) -> tuple[int, int]:
    parts = re.findall(r"\d+", text)[:2]
    return tuple(int(p) for p in parts) + (0,) * (2 - len(parts))  # type: ignore[return-value]


def match(module: nn.Module):
    """A TopKGate; refused (one line, before training) where this DeepSpeed's exp_counts is
    known to hold only first choices of top-k > 1."""
    found = _match(module)
    if found is None:
        return None
    import deepspeed

    if getattr(module, "k", 1) > 1 and version_tuple(deepspeed.__version__) < FIRST_COMPLETE:
        raise ParameterError(
            f"DeepSpeed {deepspeed.__version__}'s TopKGate counts only each token's first "
            f"choice of top-{module.k} in exp_counts (fixed in 0.14); upgrade DeepSpeed, or "
            "read the gate's indices with modules={TopKGate: from_indices(...)}")
    return found
