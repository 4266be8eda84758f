"""torchtitan: ``torchtitan.models.common.moe.TokenChoiceTopKRouter`` (older releases:
``torchtitan.models.moe.moe.TokenChoiceTopKRouter``).

The router returns the selected expert ids next to the scores; those ids are bincounted.
The MoE module's ``tokens_per_expert`` buffer holds the same counts, but it is float32 (not
exact past 2**24 tokens unless reset), only updated in training mode, and counted twice
under activation checkpointing (torchtitan's own note), so the router output is read.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moetrace.record.adapters.generic import Reader, class_match, first_attr, integer_tensor

CLASSES = {("torchtitan.models.common.moe", "TokenChoiceTopKRouter"),
           ("torchtitan.models.moe.moe", "TokenChoiceTopKRouter")}


def _selected(module: nn.Module, inputs: tuple, output: Any) -> torch.Tensor | None:
    return integer_tensor(output)


READER = Reader(_selected, n_experts=lambda m: first_attr(m, ("num_experts",)),
                top_k=lambda m: first_attr(m, ("top_k",)))
match = class_match(CLASSES, READER)
