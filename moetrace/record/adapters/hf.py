"""HuggingFace transformers: the top-k router of every MoE block (Mixtral, Qwen2/3-MoE, OLMoE...).

In transformers 5 each sparse MoE block calls a router module (``MixtralTopKRouter``,
``Qwen2MoeTopKRouter``, ``DeepseekV3TopkRouter``, ...) that returns
``(router_logits, routing_weights, selected_experts)``; the selected expert ids are exactly
how the model routes (grouped or biased routing included), so they are what is counted. A
router that returns no ids (only logits) is counted from the top-k of its logits, ``top_k``
taken from the module, as the model itself routes. Older capacity-based routers (Switch
Transformers) return a one-hot dispatch mask ``(..., experts)`` instead of ids: its column
sums are the counts (tokens dropped by the capacity limit excluded). NLLB-MoE's top-2
router returns only its first choice's mask, so it is not read.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from moetrace.record.adapters.generic import Reader, first_attr, integer_tensor

#: Router classes are recognised by where they are defined and by name, through the MRO.
MODULE_PREFIX = "transformers.models."
CLASS_NAME = re.compile(r"(TopK|Topk|TokenChoice)?Router$")

_EXPERT_ATTRS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
_TOP_K_ATTRS = ("top_k", "num_experts_per_tok", "k")


#: Routers whose output does not hold all their routing decisions.
INCOMPLETE = {"NllbMoeTop2Router"}


def matches(cls: type) -> bool:
    return (cls.__module__.startswith(MODULE_PREFIX) and cls.__name__ not in INCOMPLETE
            and CLASS_NAME.search(cls.__name__) is not None)


def _logits(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _n_experts(module: nn.Module) -> int:
    found = first_attr(module, _EXPERT_ATTRS)
    if found is not None:
        return found
    return int(module.weight.shape[0])  # routers are a (num_experts, hidden) projection


def _counts(module: nn.Module, inputs: tuple, output: Any) -> torch.Tensor | None:
    n_experts = _n_experts(module)
    ids = integer_tensor(output)
    k = first_attr(module, _TOP_K_ATTRS)
    if ids is not None and ids.dim() >= 2 and ids.shape[-1] == n_experts and k != n_experts:
        return ids.reshape(-1, n_experts).sum(dim=0)  # a one-hot dispatch mask
    if ids is None:
        if k is None:
            return None
        ids = torch.topk(_logits(output).detach(), k, dim=-1).indices
    return torch.bincount(ids.reshape(-1), minlength=n_experts)[:n_experts]


READER = Reader(_counts, counts=True, top_k=lambda m: first_attr(m, _TOP_K_ATTRS))
