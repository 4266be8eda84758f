"""Megatron-core: ``megatron.core.transformer.moe.router.TopKRouter``, whose forward returns
``(probs, routing_map)`` with a boolean ``routing_map[tokens, experts]``.

The counts are the column sums of the routing map: the tokens each expert processes, after
Megatron's optional capacity-based token dropping. (Older releases returned expert ids
instead of a map; those are bincounted.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moetrace.record.adapters.generic import Reader, class_match

CLASSES = {("megatron.core.transformer.moe.router", "TopKRouter")}


def _routed(module: nn.Module, inputs: tuple, output: Any) -> torch.Tensor:
    routing = output[1]
    n_experts = module.config.num_moe_experts
    if routing.dtype == torch.bool:
        return routing.reshape(-1, n_experts).sum(dim=0)
    return torch.bincount(routing.reshape(-1), minlength=n_experts)[:n_experts]


READER = Reader(_routed, counts=True, top_k=lambda m: getattr(m, "topk", None))
match = class_match(CLASSES, READER)
