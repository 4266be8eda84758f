"""HuggingFace transformers: every MoE block, recognised by what it holds and returns.

Two ways in, chosen per MoE block when :func:`attach` walks the model:

* **The experts call** (transformers 5): a block whose experts module is called as
  ``experts(hidden_states, top_k_index, top_k_weights)`` (the ``use_experts_implementation``
  classes of Mixtral, Qwen-MoE, DeepSeek-V3, OLMoE, DBRX and most others). A forward
  pre-hook on the experts module counts ``top_k_index``: exactly the experts every token is
  sent to, after grouped or biased routing, whatever the router returns (DBRX's router
  returns logits only). Ids at or above the expert count (padding, "zero experts") are not
  experts and are not counted.
* **The router** (blocks without such an experts call, and older releases): a router module
  (``*TopKRouter``, ``*Router``...) that holds its expert count (an attribute, or a
  ``(experts, hidden)`` weight) is counted from what it returns: routed expert ids if it
  returns an integer tensor, a one-hot dispatch mask (Switch Transformers: column sums,
  capacity drops excluded), else the top-k of its logits with ``top_k`` held by the router
  (Llama 4 returns ``(scores, logits)``). NLLB-MoE's top-2 router returns only its first
  choice's mask, so it is not read. A class that only matches by name (a "router" with no
  expert count, such as GraniteDocling's density router) is no MoE router and is left alone.

A block whose output turns out to hold none of these is skipped with a warning when it first
runs (the hook guard in moetrace/record/adapters/__init__.py), never an error in training.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

import torch
from torch import nn

from moetrace.record.adapters.generic import Reader, first_attr, integer_tensor

#: Router classes are recognised by where they are defined and by name, through the MRO.
MODULE_PREFIX = "transformers.models."
CLASS_NAME = re.compile(r"(TopK|Topk|TokenChoice)?Router$")
#: Routers whose output does not hold all their routing decisions.
INCOMPLETE = {"NllbMoeTop2Router"}

_EXPERT_ATTRS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
_TOP_K_ATTRS = ("top_k", "num_experts_per_tok", "k", "moe_top_k")


def _from_transformers(cls: type) -> bool:
    return any(base.__module__.startswith(MODULE_PREFIX) for base in cls.__mro__)


def _takes_top_k_index(module: nn.Module) -> bool:
    try:
        return "top_k_index" in inspect.signature(type(module).forward).parameters
    except (TypeError, ValueError):
        return False


def _n_experts(module: nn.Module) -> int | None:
    """The expert count a router or experts module holds, or None if it holds none."""
    found = first_attr(module, _EXPERT_ATTRS)
    if found is not None:
        return found
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        return int(weight.shape[0])  # a (num_experts, hidden) projection
    layer = getattr(module, "layer", None)  # DBRX-style: the projection as a child
    if isinstance(layer, nn.Linear):
        return int(layer.out_features)
    return None


def _top_k(*modules: nn.Module) -> int | None:
    for module in modules:
        found = first_attr(module, _TOP_K_ATTRS)
        if found is not None:
            return found
        config = getattr(module, "config", None)
        found = first_attr(config, _TOP_K_ATTRS) if config is not None else None
        if found is not None:
            return found
    return None


def _routed_ids(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """``top_k_index`` of an experts call (positional or keyword)."""
    ids = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point():
        raise ValueError("the experts call carries no top_k_index tensor")
    return ids


def _router_counts(module: nn.Module, inputs: tuple, output: Any) -> torch.Tensor:
    n_experts = _n_experts(module)
    ids = integer_tensor(output)
    k = first_attr(module, _TOP_K_ATTRS)
    if ids is not None and ids.dim() >= 2 and ids.shape[-1] == n_experts and k != n_experts:
        return ids.reshape(-1, n_experts).sum(dim=0)  # a one-hot dispatch mask
    if ids is None:
        items = output if isinstance(output, (tuple, list)) else (output,)
        logits = [t for t in items if isinstance(t, torch.Tensor) and t.is_floating_point()
                  and t.dim() >= 1 and t.shape[-1] == n_experts]
        if not logits or k is None:
            raise ValueError(f"its output holds no expert ids, dispatch mask or logits over "
                             f"{n_experts} experts with a known top-k")
        ids = torch.topk(logits[-1].detach(), k, dim=-1).indices
    return torch.bincount(ids.reshape(-1), minlength=n_experts)[:n_experts]


def match(module: nn.Module) -> tuple[str, nn.Module, Reader] | None:
    """How to count this module, if it is an HF MoE block or router: (child name or "",
    the module to hook, its reader); None if it is neither."""
    cls = type(module)
    if not _from_transformers(cls):
        return None
    for name, child in module.named_children():
        if _takes_top_k_index(child):
            n_experts = _n_experts(child)
            if n_experts is None:
                continue
            routers = [m for m in module.children() if m is not child]
            reader = Reader(lambda m, args, kwargs: _routed_ids(m, args, kwargs),
                            n_experts=n_experts, top_k=_top_k(module, *routers, child),
                            pre=True)
            return name, child, reader
    if (cls.__name__ in INCOMPLETE or CLASS_NAME.search(cls.__name__) is None
            or _n_experts(module) is None):
        return None
    return "", module, Reader(_router_counts, counts=True,
                              top_k=lambda m: first_attr(m, _TOP_K_ATTRS))
