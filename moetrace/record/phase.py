"""Which forward passes count: the one rule that keeps a recorded trace free of double counts.

A training step's tokens are counted exactly once per micro-batch:

* **train**: the module is in training mode and gradients are on, or the pass is the first
  (no-grad) pass of a *reentrant* ``torch.utils.checkpoint`` (its tokens are routed once, here).
* **skipped**: any forward run by the autograd engine during backward, i.e. activation
  recomputation (reentrant and non-reentrant checkpointing alike): it re-routes tokens that
  were already counted in the original forward.
* **eval**: everything else, i.e. the module is in eval mode, or gradients are off outside a
  checkpoint (``with torch.no_grad(): model(batch)``). Eval passes are dropped unless the
  recorder was made with ``count_eval=True``, which records them in a separate trace.
"""

from __future__ import annotations

import sys
from typing import Literal

import torch
from torch.utils import checkpoint as _checkpoint

Phase = Literal["train", "eval"]

_REENTRANT_FORWARD = _checkpoint.CheckpointFunction.forward.__code__


def in_backward() -> bool:
    """True while the autograd engine runs a backward pass on this thread (recomputation)."""
    return torch._C._current_graph_task_id() != -1


def in_reentrant_checkpoint() -> bool:
    """True inside the first pass of a reentrant checkpoint (``CheckpointFunction.forward``)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _REENTRANT_FORWARD:
            return True
        frame = frame.f_back
    return False


def forward_phase(module_training: bool | None = None) -> Phase | None:
    """The phase a forward pass running now belongs to, or None if it must not be counted.

    ``module_training`` is the MoE module's ``training`` flag; None means unknown (treated as
    training, so the grad mode decides).
    """
    if in_backward():
        return None
    if module_training is False:
        return "eval"
    if torch.is_grad_enabled() or in_reentrant_checkpoint():
        return "train"
    return "eval"
