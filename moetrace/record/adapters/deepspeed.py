"""DeepSpeed MoE: ``deepspeed.moe.sharded_moe.TopKGate``, whose forward returns
``(l_aux, combine_weights, dispatch_mask, exp_counts)``, or with sparse routes (what
``MOELayer`` uses in recent releases) ``(l_aux, capacity, E, indices, locations, gates,
exp_counts)``: ``exp_counts`` is last in both.

``exp_counts`` is the gate's own per-expert count of routed tokens (top-1, top-2 and top-k
gating alike), taken before capacity dropping, i.e. the demand on each expert.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moetrace.record.adapters.generic import Reader

CLASSES = {("deepspeed.moe.sharded_moe", "TopKGate")}


def matches(cls: type) -> bool:
    return (cls.__module__, cls.__name__) in CLASSES


def _exp_counts(module: nn.Module, inputs: tuple, output: Any) -> torch.Tensor:
    return output[-1]


READER = Reader(_exp_counts, counts=True, top_k=lambda m: getattr(m, "k", None))
