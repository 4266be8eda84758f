"""The cluster a placement is for, and the plans themselves as replica counts per GPU.

A plan for L layers is ``phy2log [L, R]`` (EPLB's form; slot p on GPU p // (R / G)) or,
equivalently for the cost model, ``replicas [L, E, G]``: how many replicas of expert e GPU g
holds. An expert's tokens are split evenly over its replicas, so the share of expert e's
tokens that GPU g processes is ``replicas[l, e, g] / replicas[l, e].sum()``.
:class:`Layout` keeps both forms of one plan, GPUs labelled alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from moetrace.defaults import PLANNER, REPORT_GPUS
from moetrace.errors import ParameterError
from moetrace.placement.rebalance import PLANNERS, rebalance_experts


@dataclass(frozen=True, init=False)
class Cluster:
    """GPUs (and nodes, expert groups) to place ``n_experts`` experts per layer on.

    ``replicas`` is the number of physical expert slots R (default: one per expert, so plans
    permute experts without replicating any); ``redundant`` slots beyond the experts may be
    given instead (R = E + redundant). ``planner`` is the rebalance algorithm of
    :func:`rebalance_experts` every plan is made with (``balanced`` or ``eplb``).

    ``rebalance`` is the planner's former name: still accepted as a keyword and readable as a
    property for one release (0.2); use ``planner``.
    """

    gpus: int
    nodes: int = 1
    groups: int = 1
    replicas: int | None = None
    redundant: int | None = None
    planner: str = PLANNER

    def __init__(self, gpus: int, nodes: int = 1, groups: int = 1, replicas: int | None = None,
                 redundant: int | None = None, planner: str = PLANNER, *,
                 rebalance: str | None = None):
        for name, value in (("gpus", gpus), ("nodes", nodes), ("groups", groups),
                            ("replicas", replicas), ("redundant", redundant),
                            ("planner", planner if rebalance is None else rebalance)):
            object.__setattr__(self, name, value)

    @property
    def rebalance(self) -> str:
        """Deprecated name of :attr:`planner` (read-only; removed after 0.2)."""
        return self.planner

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
        if self.planner not in PLANNERS:
            raise ParameterError(f"unknown planner '{self.planner}' (known: "
                                 f"{', '.join(PLANNERS)})")
        if self.gpus % self.nodes:
            # a cluster's GPUs sit on its nodes (moves between nodes cost more): EPLB's drop-in
            # plans such a shape globally, a cluster of moetrace's does not have one
            raise ParameterError(f"{self.gpus} GPUs do not split evenly over {self.nodes} "
                                 "nodes")
        if n_experts % self.gpus:
            raise ParameterError(f"{n_experts} experts do not split evenly over {self.gpus} "
                                 "GPUs for the static placement (expert e on GPU "
                                 "e // (experts / GPUs))")
        # the planner's own checks, on a dummy load, name any other misfit
        rebalance_experts(np.ones((1, n_experts)), slots, self.groups, self.nodes, self.gpus,
                          planner="eplb")
        return slots

    def plan(self, weight: np.ndarray, current: np.ndarray | None = None) -> np.ndarray:
        """``replicas [L, E, G]`` of the plan for loads ``weight [L, E]`` (see :meth:`layout`)."""
        return self.layout(weight, current).replicas

    def layout(self, weight: np.ndarray, current: np.ndarray | None = None) -> "Layout":
        """The plan for loads ``weight [L, E]``: the planner's three arrays and the replica
        counts they make.

        With the ``current`` plan (``replicas [L, E, G]``) given, the new plan's GPUs are
        relabelled (nodes matched to nodes, then GPUs within them) to keep as many replicas
        where they already are as possible: which GPU is called which does not change any
        load, but it decides what has to move. Each GPU takes its slots along, in the
        planner's order, so ``phy2log`` and ``log2phy`` stay the planner's.
        """
        n_experts = weight.shape[1]
        phy2log, log2phy, logcnt = rebalance_experts(weight, self.slots(n_experts), self.groups,
                                                     self.nodes, self.gpus, planner=self.planner)
        fresh = Layout(phy2log, log2phy, logcnt, replica_counts(phy2log, n_experts, self.gpus))
        return fresh if current is None else \
            fresh.relabel(gpu_order(fresh.replicas, current, self.nodes))

    def static(self, n_layers: int, n_experts: int) -> np.ndarray:
        """``replicas [L, E, G]`` of the static placement: expert e on GPU e // (E / G)."""
        counts = np.zeros((n_layers, n_experts, self.gpus), dtype=np.int64)
        counts[:, np.arange(n_experts), np.arange(n_experts) // (n_experts // self.gpus)] = 1
        return counts


@dataclass(frozen=True)
class Layout:
    """One plan in both forms: EPLB's arrays and the replica counts per GPU they make."""

    phy2log: np.ndarray  # (L, R) the logical expert in each slot
    log2phy: np.ndarray  # (L, E, X) the slots of each expert, padded with -1
    logcnt: np.ndarray  # (L, E) replicas per expert
    replicas: np.ndarray  # (L, E, G)

    def relabel(self, order: np.ndarray) -> "Layout":
        """The same plan with GPU ``order[l, b]`` called GPU b in layer l: each GPU's slots
        move with it, in their order."""
        layers, slots = self.phy2log.shape
        per_gpu = slots // order.shape[1]
        # new slot b * per_gpu + o holds old slot order[b] * per_gpu + o
        source = (order[:, :, None] * per_gpu + np.arange(per_gpu)).reshape(layers, slots)
        moved_to = np.empty_like(source)
        np.put_along_axis(moved_to, source, np.broadcast_to(np.arange(slots), source.shape),
                          axis=1)
        listed = self.log2phy.reshape(layers, -1)
        log2phy = np.where(listed >= 0, np.take_along_axis(moved_to, np.maximum(listed, 0),
                                                           axis=1), -1)
        return Layout(np.take_along_axis(self.phy2log, source, axis=1),
                      log2phy.reshape(self.log2phy.shape), self.logcnt,
                      np.take_along_axis(self.replicas, order[:, None, :], axis=2))


def default_cluster(n_experts: int) -> Cluster:
    """The report's default: the most GPUs up to REPORT_GPUS (8) that divide the experts, and
    one redundant slot per GPU (EPLB-style replication of the hottest experts)."""
    gpus = max(g for g in range(1, REPORT_GPUS + 1) if n_experts % g == 0)
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
    in place (see :func:`gpu_order`)."""
    return np.take_along_axis(fresh, gpu_order(fresh, current, nodes)[:, None, :], axis=2)


def gpu_order(fresh: np.ndarray, current: np.ndarray, nodes: int = 1) -> np.ndarray:
    """``[L, G]``: the GPU of ``fresh`` to call GPU b, per layer, so that the most replicas
    of ``current`` stay in place (an assignment problem per layer, nodes first when there
    are several)."""
    from scipy.optimize import linear_sum_assignment

    layers, _, gpus = fresh.shape
    per_node = gpus // nodes
    orders = np.empty((layers, gpus), dtype=np.int64)
    for layer in range(layers):
        new, old = fresh[layer], current[layer]
        # kept[a, b]: replicas that stay if new GPU a takes the place of old GPU b
        kept = np.minimum(new[:, :, None], old[:, None, :]).sum(axis=0)
        order = orders[layer]  # order[b] = the new GPU placed at b
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
    return orders


def token_split(replicas: np.ndarray) -> np.ndarray:
    """``[L, E, G]`` float32: the share of each expert's tokens that each GPU processes."""
    total = replicas.sum(axis=2, keepdims=True)
    return (replicas / np.maximum(total, 1)).astype(np.float32)


def moved_replicas(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """``[L]``: replicas the new plan puts on a GPU that held fewer copies of that expert."""
    return np.maximum(new - old, 0).sum(axis=(1, 2))


def expected_balancedness(shares: np.ndarray, replicas: np.ndarray) -> np.ndarray:
    """``[L]``: the balancedness plan ``replicas [L, E, G]`` would reach if the loads were
    ``shares [L, E]`` (the cost model above; float32, as the replay computes it)."""
    gpu = np.einsum("le,leg->lg", np.asarray(shares, dtype=np.float32), token_split(replicas))
    return balancedness(gpu)


def balancedness(gpu_tokens: np.ndarray) -> np.ndarray:
    """Mean over max of the per-GPU token counts (vLLM's balancedness), over the last axis;
    1 where no GPU has tokens."""
    peak = gpu_tokens.max(axis=-1)
    mean = gpu_tokens.mean(axis=-1)
    return np.where(peak > 0, mean / np.where(peak > 0, peak, 1), 1.0)
