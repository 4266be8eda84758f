"""Expected expert counts computed in the tests, independently of the recorder."""

from __future__ import annotations

import numpy as np
import torch


def id_counts(ids: torch.Tensor, n_experts: int) -> np.ndarray:
    """Tokens per expert from routed expert ids of any shape."""
    return np.bincount(ids.reshape(-1).numpy(), minlength=n_experts)


def topk_counts(logits: torch.Tensor, k: int, n_experts: int) -> np.ndarray:
    """Tokens per expert when each token goes to the top-k of its router logits."""
    return id_counts(torch.topk(logits, k, dim=-1).indices, n_experts)
