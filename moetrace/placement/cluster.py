"""The cluster a placement is for, and the plans themselves as replica counts per GPU.

A plan for L layers is ``phy2log [L, R]`` (EPLB's form; slot p on GPU p // (R / G)) or,
equivalently for the cost model, ``replicas [L, E, G]``: how many replicas of expert e GPU g
holds. An expert's tokens are split evenly over its replicas, so the share of expert e's
tokens that GPU g processes is ``replicas[l, e, g] / replicas[l, e].sum()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moetrace.errors import ParameterError
from moetrace.placement.rebalance import POLICIES, rebalance_experts


@dataclass(frozen=True)
class Cluster:
    """GPUs (and nodes, expert groups) to place ``n_experts`` experts per layer on.

    ``replicas`` is the number of physical expert slots R (default: one per expert, so plans
    permute experts without replicating any); ``redundant`` slots beyond the experts may be
    given instead (R = E + redundant). ``rebalance`` is the rebalance policy of
    :func:`rebalance_experts` used whenever a plan is made.
    """

    gpus: int
    nodes: int = 1
    groups: int = 1
    replicas: int | None = None
    redundant: int | None = None
    rebalance: str = "balanced"

    def slots(self, n_experts: int) -> int:
        """R for ``n_experts`` experts, checked (a ParameterError says what does not fit)."""
        if self.replicas is not None and self.redundant is not None:
            raise ParameterError("give the replica slots (--replicas) or the redundant slots "
                                 "(--redundant), not both")
        if self.gpus < 1 or self.nodes < 1 or self.groups < 1:
            raise ParameterError("GPUs, nodes and groups must be positive")
        if self.redundant is not None and self.redundant < 0:
            raise ParameterError(f"--redundant must be 0 or more, got {self.redundant}")
        slots = (self.replicas if self.replicas is not None
                 else n_experts + (self.redundant or 0))
        if self.rebalance not in POLICIES:
            raise ParameterError(f"unknown rebalance policy '{self.rebalance}' (known: "
                                 f"{', '.join(POLICIES)})")
        if n_experts % self.gpus:
            raise ParameterError(f"{n_experts} experts do not split evenly over {self.gpus} "
                                 "GPUs for the static placement (expert e on GPU "
                                 "e // (experts / GPUs))")
        # the planner's own checks, on a dummy load, name any other misfit
        rebalance_experts(np.ones((1, n_experts)), slots, self.groups, self.nodes, self.gpus,
                          policy="eplb")
        return slots

    def plan(self, weight: np.ndarray, current: np.ndarray | None = None) -> np.ndarray:
        """``replicas [L, E, G]`` of the plan for loads ``weight [L, E]``.

        With the ``current`` plan given, the new plan's GPUs are relabelled (nodes matched to
        nodes, then GPUs within them) to keep as many replicas where they already are as
        possible: which GPU is called which does not change any load, but it decides what
        has to move.
        """
        n_experts = weight.shape[1]
        phy2log, _, _ = rebalance_experts(weight, self.slots(n_experts), self.groups,
                                          self.nodes, self.gpus, policy=self.rebalance)
        fresh = replica_counts(phy2log, n_experts, self.gpus)
        return fresh if current is None else align(fresh, current, self.nodes)

    def static(self, n_layers: int, n_experts: int) -> np.ndarray:
        """``replicas [L, E, G]`` of the static placement: expert e on GPU e // (E / G)."""
        counts = np.zeros((n_layers, n_experts, self.gpus), dtype=np.int64)
        counts[:, np.arange(n_experts), np.arange(n_experts) // (n_experts // self.gpus)] = 1
        return counts


#: the report's cluster when none is given: up to this many GPUs, one redundant slot per GPU
DEFAULT_GPUS = 8


def default_cluster(n_experts: int) -> Cluster:
    """The report's default: the most GPUs up to 8 that divide the experts, and one redundant
    slot per GPU (EPLB-style replication of the hottest experts)."""
    gpus = max(g for g in range(1, DEFAULT_GPUS + 1) if n_experts % g == 0)
    return Cluster(gpus=gpus, redundant=gpus)


def replica_counts(phy2log: np.ndarray, n_experts: int, gpus: int) -> np.ndarray:
    """``[L, E, G]`` replicas of each expert on each GPU, from ``phy2log [L, R]``."""
    layers, slots = phy2log.shape
    gpu = np.arange(slots) // (slots // gpus)
    counts = np.zeros((layers, n_experts, gpus), dtype=np.int64)
    np.add.at(counts, (np.arange(layers)[:, None], phy2log, gpu[None, :]), 1)
    return counts


def align(fresh: np.ndarray, current: np.ndarray, nodes: int = 1) -> np.ndarray:
    """``fresh [L, E, G]`` with its GPUs relabelled to keep the most replicas of ``current``
    in place (an assignment problem per layer, nodes first when there are several)."""
    from scipy.optimize import linear_sum_assignment

    layers, _, gpus = fresh.shape
    per_node = gpus // nodes
    out = np.empty_like(fresh)
    for layer in range(layers):
        new, old = fresh[layer], current[layer]
        # kept[a, b]: replicas that stay if new GPU a takes the place of old GPU b
        kept = np.minimum(new[:, :, None], old[:, None, :]).sum(axis=0)
        order = np.empty(gpus, dtype=np.int64)  # order[b] = the new GPU placed at b
        if nodes > 1:
            node_kept = kept.reshape(nodes, per_node, nodes, per_node).sum(axis=(1, 3))
            rows, cols = linear_sum_assignment(-node_kept)
            pairs = zip(rows, cols)
        else:
            pairs = [(0, 0)]
        for a_node, b_node in pairs:
            a = slice(a_node * per_node, (a_node + 1) * per_node)
            b = slice(b_node * per_node, (b_node + 1) * per_node)
            rows, cols = linear_sum_assignment(-kept[a, b])
            order[b_node * per_node + cols] = a_node * per_node + rows
        out[layer] = new[:, order]
    return out


def token_split(replicas: np.ndarray) -> np.ndarray:
    """``[L, E, G]`` float32: the share of each expert's tokens that each GPU processes."""
    total = replicas.sum(axis=2, keepdims=True)
    return (replicas / np.maximum(total, 1)).astype(np.float32)


def moved_replicas(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``[L]``: replicas the new plan puts on a GPU that held fewer copies of that expert."""
    return np.maximum(new - old, 0).sum(axis=(1, 2))


def balancedness(gpu_tokens: np.ndarray) -> np.ndarray:
    """Mean over max of the per-GPU token counts (vLLM's balancedness), over the last axis;
    1 where no GPU has tokens."""
    peak = gpu_tokens.max(axis=-1)
    mean = gpu_tokens.mean(axis=-1)
    return np.where(peak > 0, mean / np.where(peak > 0, peak, 1), 1.0)
