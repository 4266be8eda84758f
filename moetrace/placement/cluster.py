"""The cluster a placement is for, and the plans themselves as replica counts per GPU.

A plan for L layers is ``phy2log [L, R]`` (EPLB's form; slot p on GPU p // (R / G)) or,
equivalently for the cost model, ``replicas [L, E, G]``: how many replicas of expert e GPU g
holds. An expert's tokens are split evenly over its replicas, so the share of expert e's
tokens that GPU g processes is ``replicas[l, e, g] / replicas[l, e].sum()``.
:class:`Layout` keeps both forms of one plan, GPUs labelled alike.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from moetrace.defaults import MOVE_TOLERANCE, PLANNER, REPORT_GPUS
from moetrace.errors import ParameterError
from moetrace.placement.rebalance import BLOCKS, PLANNERS, plan_experts, rebalance_experts
from moetrace.placement.scoring import (balancedness, expected_balancedness, moved_replicas,
                                        replica_counts, token_split)

__all__ = ["Cluster", "Layout", "align", "balancedness", "default_cluster",
           "expected_balancedness", "gpu_order", "moved_replicas", "replica_counts",
           "token_split"]


@dataclass(frozen=True, init=False)
class Cluster:
    """GPUs (and nodes, expert groups) to place ``n_experts`` experts per layer on.

    ``replicas`` is the number of physical expert slots R (default: one per expert, so plans
    permute experts without replicating any); ``redundant`` slots beyond the experts may be
    given instead (R = E + redundant). ``planner`` is the rebalance algorithm of
    :func:`rebalance_experts` every plan is made with (``balanced`` or ``eplb``).

    ``move_tolerance``: how much mean balancedness (on the samples a re-plan is judged on) a
    re-plan of the ``balanced`` planner may give up against a fresh plan to move fewer
    replicas (moetrace.placement.moves; never below EPLB's own plan); None re-plans from
    scratch (the plan in force only decides which GPU is called which). The ``eplb``
    planner always re-plans from scratch, as EPLB does.

    ``rebalance`` is the planner's former name: still accepted as a keyword and readable as a
    property for one release (0.2); use ``planner``.
    """

    gpus: int
    nodes: int = 1
    groups: int = 1
    replicas: int | None = None
    redundant: int | None = None
    planner: str = PLANNER
    move_tolerance: float | None = MOVE_TOLERANCE

    def __init__(self, gpus: int, nodes: int = 1, groups: int = 1, replicas: int | None = None,
                 redundant: int | None = None, planner: str = PLANNER,
                 move_tolerance: float | None = MOVE_TOLERANCE, *,
                 rebalance: str | None = None):
        for name, value in (("gpus", gpus), ("nodes", nodes), ("groups", groups),
                            ("replicas", replicas), ("redundant", redundant),
                            ("planner", planner if rebalance is None else rebalance),
                            ("move_tolerance", move_tolerance)):
            object.__setattr__(self, name, value)

    def with_(self, **changes) -> "Cluster":
        """This cluster with some settings changed (``redundant`` replaces ``replicas``)."""
        if "redundant" in changes:
            changes.setdefault("replicas", None)
        return replace(self, **changes)

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
        if self.move_tolerance is not None and not 0 <= self.move_tolerance <= 1:
            raise ParameterError(f"--move-tolerance must be between 0 and 1, got "
                                 f"{self.move_tolerance}")
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

    def plan(self, weight: np.ndarray, current: np.ndarray | None = None,
             samples: np.ndarray | None = None, blocks: int = BLOCKS) -> np.ndarray:
        """``replicas [L, E, G]`` of the plan for loads ``weight [L, E]`` (see :meth:`layout`)."""
        return self.layout(weight, current, samples, blocks).replicas

    def layout(self, weight: np.ndarray, current: np.ndarray | None = None,
               samples: np.ndarray | None = None, blocks: int = BLOCKS) -> "Layout":
        """The plan for loads ``weight [L, E]``: the planner's three arrays and the replica
        counts they make.

        ``samples [L, S, E]``: per-step loads of the interval the plan will be held for, as
        they are expected to be (moetrace.placement.estimates: ``Estimates.samples``); the
        ``balanced`` planner plans for them (:func:`~moetrace.placement.rebalance.plan_experts`;
        ``blocks``: in how many consecutive blocks of them a plan must beat EPLB's, 1 for
        samples that are the very steps to come).

        With the ``current`` plan (``replicas [L, E, G]``) given, the new plan's GPUs are
        relabelled (nodes matched to nodes, then GPUs within them) to keep as many replicas
        where they already are as possible: which GPU is called which does not change any
        load, but it decides what has to move. Each GPU takes its slots along, in the
        planner's order, so ``phy2log`` and ``log2phy`` stay the planner's. Then, unless the
        re-plan is from scratch (``move_tolerance`` None, or the ``eplb`` planner), a plan
        that moves fewer replicas for nearly the same balance may stand in
        (moetrace.placement.moves); :attr:`Layout.scratch_moves` says what the fresh plan
        would have moved.
        """
        n_experts = weight.shape[1]
        hierarchical = self.groups % self.nodes == 0
        planned = plan_experts(weight, self.slots(n_experts), self.groups, self.nodes,
                               self.gpus, planner=self.planner, samples=samples,
                               blocks=blocks)
        fresh = Layout(planned.phy2log, planned.log2phy, planned.logcnt,
                       replica_counts(planned.phy2log, n_experts, self.gpus))
        if current is None:
            return fresh
        fresh = fresh.relabel(gpu_order(fresh.replicas, current, self.nodes))
        scratch = moved_replicas(current, fresh.replicas)
        if self.planner == "eplb" or self.move_tolerance is None:
            return replace(fresh, scratch_moves=scratch)
        from moetrace.placement.moves import fewer_moves, layout_arrays

        eplb = replica_counts(planned.eplb_phy2log, n_experts, self.gpus)
        chosen, kept_fresh = fewer_moves(
            current, fresh.replicas, eplb, weight, samples if samples is None
            else np.asarray(samples, dtype=np.float32), self.move_tolerance,
            self.nodes if hierarchical else 1, hierarchical, blocks)
        if kept_fresh.all():
            return replace(fresh, scratch_moves=scratch)
        phy2log, log2phy, logcnt = layout_arrays(chosen)
        both = _pad_log2phy(fresh.log2phy, log2phy)
        pick = kept_fresh[:, None]
        return Layout(np.where(pick, fresh.phy2log, phy2log),
                      np.where(pick[:, :, None], both[0], both[1]),
                      np.where(pick, fresh.logcnt, logcnt),
                      np.where(pick[:, :, None], fresh.replicas, chosen), scratch)

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
    #: (L,) replicas a fresh plan would have moved off the plan in force (a re-plan), or None
    scratch_moves: np.ndarray | None = None

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
                      np.take_along_axis(self.replicas, order[:, None, :], axis=2),
                      self.scratch_moves)


def _pad_log2phy(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two ``log2phy`` arrays padded with -1 to the wider's width."""
    width = max(a.shape[2], b.shape[2])
    pad = lambda x: np.pad(x, ((0, 0), (0, 0), (0, width - x.shape[2])),  # noqa: E731
                           constant_values=-1)
    return pad(a), pad(b)


def default_cluster(n_experts: int) -> Cluster:
    """The report's default: the most GPUs up to REPORT_GPUS (8) that divide the experts, and
    one redundant slot per GPU (EPLB-style replication of the hottest experts)."""
    gpus = max(g for g in range(1, REPORT_GPUS + 1) if n_experts % g == 0)
    return Cluster(gpus=gpus, redundant=gpus)


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


