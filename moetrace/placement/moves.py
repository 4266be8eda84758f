"""Re-plans that move little: start from the placement in force, move a replica only when that
buys balance.

A fresh plan (the planner's, its GPUs relabelled to keep the most replicas in place) moves
whatever it moves. :func:`fewer_moves` looks for a plan with the fresh plan's replica counts
that keeps more replicas where they are: it keeps every replica of the plan in force that the
new counts still want (on the node the fresh plan puts its expert on), frees the heaviest
kept replicas of the heaviest GPUs one at a time (0, 1, 2, 4, ... up to :data:`MOST_FREED`
of them: one candidate each), and places the replicas left over greedily, heaviest first,
each on the lightest GPU with a free slot that does not already hold that expert where one
can. Of these candidates,
the plan in force itself and the fresh plan, each layer takes the one that moves the fewest
replicas among those whose balancedness on the samples is

- in the mean, at least the fresh plan's less ``tolerance`` and at least EPLB's own plan's
  (a re-plan that moves little never trades away what EPLB would reach on the same
  samples), and
- in each of ``blocks`` consecutive blocks of the samples (the planner's), no more than the
  planner's margin below EPLB's plan's (no stretch of the samples where it falls behind).

The fresh plan always qualifies, so no layer scores less than that on the samples it was
chosen on (up to :data:`~moetrace.placement.rebalance.SELECT_SAMPLES` of them), and a pick
that scores below EPLB's plan over all the samples gives way to the fresh plan.
"""

from __future__ import annotations

import numpy as np

from moetrace.placement.packing import ranks_in_packs
from moetrace.placement.rebalance import BLOCK_MARGIN, BLOCKS, SELECT_SAMPLES, _log2phy
from moetrace.placement.scoring import (block_means, mean_balancedness, moved_replicas,
                                        spread_rows, step_balancedness)

#: the most kept replicas a candidate frees (candidates free 0, 1, 2, 4, ... up to this)
MOST_FREED = 64


def fewer_moves(current: np.ndarray, fresh: np.ndarray, eplb: np.ndarray, weight: np.ndarray,
                samples: np.ndarray | None, tolerance: float, nodes: int,
                hierarchical: bool, blocks: int = BLOCKS) -> tuple[np.ndarray, np.ndarray]:
    """(replicas ``[L, E, G]`` of the re-plan, ``[L]`` bool: the layers that kept the fresh
    plan) from the plan in force ``current``, the ``fresh`` plan (relabelled to it) and
    EPLB's plan ``eplb`` of the loads ``weight [L, E]``; see the module docstring.

    ``samples [L, S, E]`` are the per-step loads the plans are judged on (None: the mean
    ``weight`` as one step); a ``hierarchical`` plan keeps each expert's replicas on the node
    the fresh plan puts them on (of ``nodes``)."""
    weight = np.asarray(weight, dtype=np.float64)
    gpus = fresh.shape[2]
    per_gpu = int(fresh[0].sum()) // gpus
    gpu_node = np.arange(gpus) // (gpus // nodes)
    node_of = None
    if hierarchical and nodes > 1:
        on_node = np.zeros(fresh.shape[:2] + (nodes,), dtype=np.int64)
        np.add.at(on_node, (slice(None), slice(None), gpu_node), fresh)
        node_of = np.argmax(on_node, axis=2)
    judged = (np.asarray(weight, dtype=np.float32)[:, None, :] if samples is None
              else samples[:, spread_rows(samples.shape[1], SELECT_SAMPLES)])
    logcnt = fresh.sum(axis=2)
    candidates = [fresh, current, *_sticky(current, logcnt, weight, node_of, gpu_node,
                                           per_gpu)]
    steps = np.stack([step_balancedness(judged, c) for c in candidates])  # [K, L, S]
    scores = steps.mean(axis=2, dtype=np.float64)  # [K, L]
    moves = np.stack([moved_replicas(current, c) for c in candidates])
    reference = step_balancedness(judged, eplb)  # [L, S]
    # within the tolerance of the fresh plan, not below EPLB's in the mean, and nowhere more
    # than the planner's margin below it block by block
    ok = (scores >= (scores[0] - tolerance)[None, :]) & \
        (scores >= reference.mean(axis=1, dtype=np.float64)[None, :]) & \
        (block_means(steps, blocks) >= block_means(reference, blocks)[None] - BLOCK_MARGIN
         ).all(axis=2)
    # the plan in force stands only where it fills every slot (the static placement holds
    # no replicas: its redundant slots are empty)
    ok[1] &= current.sum(axis=(1, 2)) == fresh.sum(axis=(1, 2))
    ok[0] = True  # the fresh plan is the fallback (it never scores below EPLB's: the planner)
    # fewest moves among those that qualify; on a tie the better score, then the earlier
    key = np.where(ok, moves, np.iinfo(np.int64).max)
    fewest = key.min(axis=0)
    best = np.argmax(np.where(key == fewest[None, :], scores, -np.inf), axis=0)
    layers = np.arange(weight.shape[0])
    chosen = np.stack(candidates)[best, layers]
    if samples is not None and judged.shape[1] < samples.shape[1] and (best > 0).any():
        below = mean_balancedness(samples, chosen) < mean_balancedness(samples, eplb)
        best = np.where(below, 0, best)
        chosen = np.stack(candidates)[best, layers]
    return chosen, best == 0


def _sticky(current: np.ndarray, logcnt: np.ndarray, weight: np.ndarray,
            node_of: np.ndarray | None, gpu_node: np.ndarray, per_gpu: int
            ) -> list[np.ndarray]:
    """Plans with replica counts ``logcnt [L, E]`` keeping replicas of ``current`` in place:
    one per number of freed replicas (0, 1, 2, 4, ...)."""
    per_replica = weight / np.maximum(logcnt, 1)  # [L, E]
    kept = _kept(current, logcnt, per_replica, node_of, gpu_node)
    snapshots, freed = [], 0
    total = min(int(kept.sum(axis=(1, 2)).max()), MOST_FREED)
    levels = sorted({0, *(2 ** i for i in range(max(total, 1).bit_length()))})
    for level in (x for x in levels if x <= total):
        while freed < level:
            kept = _free_heaviest(kept, per_replica)
            freed += 1
        snapshots.append(kept)
    # every level's rows placed at once (the greedy loops over replicas, not rows)
    count = len(snapshots)
    placed = _place(np.concatenate(snapshots), np.tile(logcnt, (count, 1)),
                    np.tile(per_replica, (count, 1)),
                    None if node_of is None else np.tile(node_of, (count, 1)), gpu_node,
                    per_gpu)
    return list(placed.reshape((count,) + current.shape))


def _kept(current, logcnt, per_replica, node_of, gpu_node) -> np.ndarray:
    """``[L, E, G]``: the replicas of ``current`` the new counts still want, on their node;
    an expert with more replicas than it keeps keeps those on its lightest GPUs."""
    layers, experts, gpus = current.shape
    allowed = current.copy()
    if node_of is not None:
        allowed *= (node_of[:, :, None] == gpu_node[None, None, :])
    load = np.einsum("leg,le->lg", current, per_replica)  # the GPU loads as they are
    # the replicas of each expert, lightest GPU first, one slot of ``allowed`` at a time
    order = np.argsort(load, axis=1, kind="stable")  # [L, G] GPUs by load
    by_load = np.take_along_axis(allowed, order[:, None, :], axis=2)
    before = np.cumsum(by_load, axis=2) - by_load  # replicas on lighter GPUs
    keep = np.clip(logcnt[:, :, None] - before, 0, by_load)
    kept = np.empty_like(keep)
    np.put_along_axis(kept, order[:, None, :], keep, axis=2)
    return kept


def _free_heaviest(kept: np.ndarray, per_replica: np.ndarray) -> np.ndarray:
    """``kept`` less the heaviest replica of its heaviest GPU, in every layer holding one."""
    load = np.einsum("leg,le->lg", kept, per_replica)
    layers = np.arange(kept.shape[0])
    gpu = np.argmax(load, axis=1)
    held = kept[layers, :, gpu] > 0  # [L, E]
    heaviest = np.argmax(np.where(held, per_replica, -np.inf), axis=1)
    out = kept.copy()
    some = held.any(axis=1)
    out[layers[some], heaviest[some], gpu[some]] -= 1
    return out


def _place(kept, logcnt, per_replica, node_of, gpu_node, per_gpu) -> np.ndarray:
    """``kept`` with every expert's missing replicas placed greedily (heaviest first, on
    the lightest GPU with a free slot on the expert's node, one not holding the expert
    where there is one)."""
    layers, experts, gpus = kept.shape
    plan = kept.copy()
    missing = logcnt - kept.sum(axis=2)  # [L, E], >= 0
    # the items to place, heaviest first, padded with -1
    count = int(missing.sum(axis=1).max())
    if count == 0:
        return plan
    order = np.argsort(-per_replica, axis=1, kind="stable")
    reps = np.take_along_axis(missing, order, axis=1)
    ends = np.cumsum(reps, axis=1)
    position = np.arange(count)
    slot = np.minimum((position[None, :, None] >= ends[:, None, :]).sum(axis=2), experts - 1)
    items = np.where(position[None, :] < ends[:, -1:], np.take_along_axis(order, slot, axis=1),
                     -1)
    load = np.einsum("leg,le->lg", plan, per_replica)
    room = per_gpu - plan.sum(axis=1)  # [L, G]
    rows = np.arange(layers)
    for i in range(count):
        item = items[:, i]
        live = item >= 0
        e = np.maximum(item, 0)
        cost = load + np.where(plan[rows, e, :] > 0, load.max(axis=1, keepdims=True) + 1.0 +
                               per_replica.max(), 0.0)
        closed = room <= 0
        if node_of is not None:
            closed |= gpu_node[None, :] != node_of[rows, e][:, None]
        gpu = np.argmin(np.where(closed, np.inf, cost), axis=1)
        at = rows[live]
        plan[at, e[live], gpu[live]] += 1
        room[at, gpu[live]] -= 1
        load[at, gpu[live]] += per_replica[at, e[live]]
    return plan


def layout_arrays(replicas: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """EPLB's three arrays (phy2log, log2phy, logcnt) of the plan ``replicas [L, E, G]``:
    each GPU's slots hold its experts in ascending order."""
    layers, experts, gpus = replicas.shape
    per_gpu = replicas.transpose(0, 2, 1)  # [L, G, E]
    expert = np.broadcast_to(np.arange(experts), per_gpu.shape)
    phy2log = np.repeat(expert.reshape(-1), per_gpu.reshape(-1)).reshape(layers, -1)
    logcnt = replicas.sum(axis=2)
    rank = ranks_in_packs(phy2log, experts)
    return phy2log, _log2phy(phy2log, rank, logcnt), logcnt
