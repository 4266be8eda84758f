"""The time model: balancedness into modeled MoE compute seconds, moves into transfer seconds.

- **Compute.** A GPU works through its routed token-slots one after another; an MoE layer's
  step ends when the busiest GPU does. So the layer's modeled compute time in a step is
  ``max over GPUs of its token-slots x token_seconds``, where ``token_seconds`` is the time
  one GPU spends on one token-slot in one expert: measured (``token_seconds``, for example
  a profiled MoE layer time divided by the token-slots it processed), or estimated from the
  expert's size as ``flops_per_param x expert_params / gpu_flops`` (6 FLOPs per parameter
  per token in training: forward 2, backward 4). A sampled trace's sample stands for the
  ``interval`` training steps around it.
- **Moves.** A re-plan copies each new replica (``expert_params x bytes_per_param`` bytes:
  16 for a training expert with its Adam state, 2 for a bf16 inference replica) to its GPU:
  from a GPU of the same node at ``intra_node_bandwidth`` (NVLink) where one holds the
  expert, else across nodes at ``inter_node_bandwidth``. GPUs receive in parallel, so a
  re-plan's transfer time is the largest of the GPUs' receive times.
- **Rearrangement.** ``sync``: training stops for every re-plan that moves anything, for
  ``stall_seconds`` (the engine's own pause: vLLM's and SGLang's users report 0.65-1.70 s per
  synchronous rearrangement) plus the transfer time. ``async``: the copies run beside
  training; only the transfer time is charged (an upper bound: an engine that overlaps them
  fully pays less).

Per policy: compute seconds saved against the static placement over the replay, move
seconds, and the net (saved less moves). The defaults are moetrace.defaults'; each says
where its figure comes from (docs/placement.md, "The time model").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from moetrace.defaults import (BYTES_PER_PARAM, FLOPS_PER_PARAM, GPU_FLOPS,
                               INTER_NODE_BANDWIDTH, INTRA_NODE_BANDWIDTH, REARRANGEMENT,
                               STALL_SECONDS)
from moetrace.errors import ParameterError

REARRANGEMENTS = ("sync", "async")


@dataclass(frozen=True)
class TimeModel:
    """The parameters of the time model (see the module docstring); all user-settable."""

    expert_params: int | None = None  # parameters of one expert (None: unknown)
    bytes_per_param: int = BYTES_PER_PARAM
    token_seconds: float | None = None  # measured; None: from the FLOPs below
    gpu_flops: float = GPU_FLOPS  # achieved FLOP/s of one GPU on the experts
    flops_per_param: float = FLOPS_PER_PARAM  # per token-slot and expert parameter
    intra_node_bandwidth: float = INTRA_NODE_BANDWIDTH  # bytes/s into a GPU within a node
    inter_node_bandwidth: float = INTER_NODE_BANDWIDTH  # bytes/s into a GPU across nodes
    rearrangement: str = REARRANGEMENT  # sync or async
    stall_seconds: float = STALL_SECONDS  # per synchronous re-plan that moves anything

    def __post_init__(self) -> None:
        checks = [("--expert-params", self.expert_params, True),
                  ("--bytes-per-param", self.bytes_per_param, False),
                  ("--token-seconds", self.token_seconds, True),
                  ("--gpu-tflops", self.gpu_flops, False),
                  ("flops per parameter", self.flops_per_param, False),
                  ("--intra-node-gbps", self.intra_node_bandwidth, False),
                  ("--inter-node-gbps", self.inter_node_bandwidth, False)]
        for name, value, optional in checks:
            if value is None and optional:
                continue
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise ParameterError(f"{name} must be a positive number, got {value}")
        if self.rearrangement not in REARRANGEMENTS:
            raise ParameterError(f"--rearrangement takes {' or '.join(REARRANGEMENTS)}, got "
                                 f"'{self.rearrangement}'")
        if not np.isfinite(self.stall_seconds) or self.stall_seconds < 0:
            raise ParameterError(f"--stall-seconds must be 0 or more, got {self.stall_seconds}")

    def seconds_per_token(self) -> float | None:
        """Seconds one GPU spends on one token-slot in one expert (None: unknown)."""
        if self.token_seconds is not None:
            return float(self.token_seconds)
        if self.expert_params is None:
            return None
        return self.flops_per_param * self.expert_params / self.gpu_flops

    def bytes_per_replica(self) -> int | None:
        return None if self.expert_params is None else self.expert_params * self.bytes_per_param

    def known(self) -> bool:
        """Whether seconds can be modeled: the compute rate and the bytes of a replica."""
        return self.seconds_per_token() is not None and self.bytes_per_replica() is not None

    def move_seconds(self, intra: np.ndarray, inter: np.ndarray) -> float:
        """Seconds one re-plan costs: ``intra [G]`` and ``inter [G]`` replicas each GPU
        receives from its own node and from another (the stall included when synchronous
        and anything moves). Needs :meth:`known`."""
        if not (np.sum(intra) + np.sum(inter)) > 0:
            return 0.0
        per_replica = self.bytes_per_replica()
        transfer = float(np.max(intra * per_replica / self.intra_node_bandwidth
                                + inter * per_replica / self.inter_node_bandwidth))
        return transfer + (self.stall_seconds if self.rearrangement == "sync" else 0.0)

    def document(self) -> dict[str, Any]:
        """The parameters used, and the seconds per token-slot they give (JSON)."""
        return {**asdict(self), "seconds_per_token": self.seconds_per_token(),
                "token_seconds_from": ("measured" if self.token_seconds is not None
                                       else "flops" if self.expert_params is not None
                                       else None)}


def gpu_moves(old: np.ndarray, new: np.ndarray, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """(``[L, G]``, ``[L, G]``): the replicas each GPU receives in a re-plan from ``old`` to
    ``new`` (replicas ``[L, E, G]``), from a GPU of its own node (one held the expert there)
    and from another node."""
    added = np.maximum(new - old, 0)
    layers, experts, gpus = old.shape
    node = np.arange(gpus) // (gpus // nodes)
    on_node = np.zeros((layers, experts, nodes), dtype=np.int64)
    np.add.at(on_node, (slice(None), slice(None), node), old)
    near = on_node[:, :, node] > 0  # [L, E, G]: the expert was on the GPU's node
    intra = np.where(near, added, 0).sum(axis=1)
    return intra, added.sum(axis=1) - intra
