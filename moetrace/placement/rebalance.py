"""Where to put (and replicate) experts: a drop-in for DeepSeek EPLB's ``rebalance_experts``.

Contract (the same as ``eplb.rebalance_experts`` in deepseek-ai/EPLB, numpy instead of torch):

- ``weight [layers, E]``: the estimated load of every logical expert (only comparisons within a
  layer matter: counts, means and shares give the same plan); a numpy array, a nested list or
  a torch tensor on any device;
- ``num_replicas`` R physical expert slots, a multiple of ``num_gpus``; slot p lives on GPU
  ``p // (R / num_gpus)``;
- ``num_groups`` expert groups (E / num_groups consecutive experts each, as in group-limited
  routing): when ``num_groups % num_nodes == 0`` the plan is hierarchical, whole groups packed
  onto nodes and replicas kept inside their node, and then E must split into the groups and
  ``num_gpus`` over the nodes; otherwise the plan is global (one group, one node), whatever
  the groups, nodes and GPUs;
- returns ``phy2log [layers, R]`` (the logical expert in each slot), ``log2phy [layers, E, X]``
  (the slots of each expert, padded with -1) and ``logcnt [layers, E]`` (replicas per expert,
  at least 1), all int64.

Planners (``planner=``): ``"eplb"`` is EPLB's own algorithm (greedy packing of groups onto
nodes, redundant slots one at a time to the expert with the highest load per replica, greedy
packing of the replicas onto GPUs) in float32 as EPLB computes it, equal loads taken in the
order of PyTorch's CPU sort (moetrace.placement.packing.sort_descending): it gives EPLB's
arrays, its published example among them. ``"balanced"`` (the default) makes several
candidate plans, EPLB's own among them (both packings refined with pairwise swaps,
moetrace.placement.packing.refine_packing; replicas capped at one per GPU of the node; and,
given per-step samples of the loads, plans for the mean plus a multiple of each expert's
step-to-step spread), and keeps per layer the best: without samples the smallest maximum GPU
load under ``weight``, with samples (``samples [layers, S, E]``: the steps the plan is for, as
they are expected to be) the highest mean balancedness over them, EPLB's plan winning ties.
Either way it is never worse than ``"eplb"`` on what it is judged by (see :func:`plan_experts`).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from moetrace.defaults import PLANNER
from moetrace.errors import ParameterError
from moetrace.placement.packing import greedy_packing, ranks_in_packs, refine_packing
from moetrace.placement.scoring import (block_means, mean_balancedness, replica_counts,
                                        spread_rows, step_balancedness)

Planner = Literal["balanced", "eplb"]
PLANNERS: tuple[str, ...] = ("balanced", "eplb")
#: the former name of PLANNERS ("policy" now means a replay strategy)
POLICIES = PLANNERS
#: with samples, candidate plans are also made for each expert's mean share plus these many
#: standard deviations of its per-step share: a plan held over steps that vary hedges
#: against the experts that swing (more replicas for them, spread over more GPUs). Larger
#: factors won more on the samples and lost more on the steps after them (docs/placement.md)
SPREAD_FACTORS = (0.25, 0.5)
#: candidates are compared on at most this many of the samples (spread evenly over them);
#: the plan kept is then checked against EPLB's on every sample. Fewer made the blocks noisy:
#: with 256, demo-real's adaptive policy fell below EPLB's planner (-0.32 points)
SELECT_SAMPLES = 1024
#: a candidate replaces EPLB's plan only if it scores higher, by at least BLOCK_MARGIN, in
#: each of this many consecutive blocks of the samples (in time order): a gain that holds
#: across the samples, not one that a part of them makes (the steps to come are not the
#: samples). Fewer blocks and no margin won more on the samples and lost more often on the
#: steps after them (docs/placement.md, "What is guaranteed")
BLOCKS = 16
#: ... the margin, in mean balancedness per block
BLOCK_MARGIN = 0.001


@dataclass(frozen=True)
class Planned:
    """A plan (EPLB's three arrays) and EPLB's own plan of the same loads beside it."""

    phy2log: np.ndarray  # (L, R)
    log2phy: np.ndarray  # (L, E, X)
    logcnt: np.ndarray  # (L, E)
    eplb_phy2log: np.ndarray  # (L, R): EPLB's plan, the reference a re-plan may not fall below
    eplb_logcnt: np.ndarray  # (L, E)


def rebalance_experts(weight: np.ndarray | Sequence[Sequence[float]], num_replicas: int,
                      num_groups: int, num_nodes: int, num_gpus: int, *,
                      planner: Planner | None = None, policy: Planner | None = None,
                      samples: np.ndarray | None = None, blocks: int = BLOCKS
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plan ``num_replicas`` slots for every layer; see the module docstring for the contract.

    ``planner`` defaults to ``"balanced"``; ``policy`` is its former name, deprecated.
    ``samples [layers, S, E]`` (optional, ``balanced`` only): per-step loads of the steps the
    plan will be held for, as they are expected to be (for example the counts of the last S
    steps); the plan kept is then the one with the highest mean balancedness over them
    among those that beat EPLB's in each of ``blocks`` consecutive blocks of them (1 where
    the samples are the very steps the plan is for: a plan in hindsight).
    """
    if policy is not None:
        warnings.warn("rebalance_experts(policy=...) is deprecated: pass planner=... (the "
                      "rebalance algorithm is the planner)", DeprecationWarning, stacklevel=2)
        if planner is not None and planner != policy:
            raise ParameterError(f"planner '{planner}' and policy '{policy}' disagree: give "
                                 "the planner only")
        planner = policy
    planned = plan_experts(weight, num_replicas, num_groups, num_nodes, num_gpus,
                           planner=PLANNER if planner is None else planner, samples=samples,
                           blocks=blocks)
    return planned.phy2log, planned.log2phy, planned.logcnt


def plan_experts(weight, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int, *,
                 planner: Planner = PLANNER, samples: np.ndarray | None = None,
                 blocks: int = BLOCKS) -> Planned:
    """:func:`rebalance_experts` with EPLB's own plan of the same loads kept beside the plan.

    What ``"balanced"`` guarantees, per layer: without ``samples``, a maximum GPU load under
    ``weight`` no higher than EPLB's plan's; with ``samples``, a mean balancedness over all
    the samples no lower than EPLB's plan's (float32, computed as the replay computes it:
    moetrace.placement.scoring). Steps that are not among the samples are not guaranteed.
    """
    weight = check_inputs(weight, num_replicas, num_groups, num_nodes, num_gpus, planner)
    samples = check_samples(samples, weight)
    if num_groups % num_nodes:
        num_groups = num_nodes = 1  # EPLB's global policy
    eplb = _hierarchical(weight.astype(np.float32), num_replicas, num_groups, num_nodes,
                         num_gpus, refine=False)
    if planner == "eplb":
        phy2log, rank, logcnt = eplb
    else:
        if int(blocks) != blocks or blocks < 1:
            raise ParameterError(f"blocks must be a positive integer, got {blocks}")
        phy2log, rank, logcnt = _best_of(weight, num_replicas, num_groups, num_nodes, num_gpus,
                                         eplb, samples, int(blocks))
    return Planned(phy2log, _log2phy(phy2log, rank, logcnt), logcnt, eplb[0], eplb[2])


def check_samples(samples, weight: np.ndarray) -> np.ndarray | None:
    """The samples as a float32 ``[layers, S, E]`` array fitting ``weight`` (None: none; an
    array without steps is none), or a ParameterError."""
    if samples is None:
        return None
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 3 or samples.shape[0] != weight.shape[0] \
            or samples.shape[2] != weight.shape[1]:
        raise ParameterError(f"samples must be a [layers, steps, experts] array fitting the "
                             f"loads {weight.shape}, got shape {samples.shape}")
    if samples.shape[1] == 0:
        return None
    if not np.all(np.isfinite(samples)) or (samples < 0).any():
        raise ParameterError("samples must be finite and non-negative")
    return samples


def check_inputs(weight, num_replicas: int, num_groups: int, num_nodes: int, num_gpus: int,
                 planner: str) -> np.ndarray:
    """The loads as a float64 ``[layers, E]`` array, or a ParameterError saying what is wrong.

    Accepts what EPLB accepts, except loads that are negative or not finite (EPLB plans those
    too, meaninglessly) and counts that are not positive integers.
    """
    if planner not in PLANNERS:
        raise ParameterError(f"unknown planner '{planner}' (known: {', '.join(PLANNERS)})")
    torch = sys.modules.get("torch")  # a tensor can only come from a torch already imported
    if torch is not None and isinstance(weight, torch.Tensor):
        weight = weight.detach().cpu().double().numpy()  # any dtype, any device
    try:
        weight = np.asarray(weight, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError("loads must be a [layers, experts] array of numbers") from None
    if weight.ndim != 2 or 0 in weight.shape:
        raise ParameterError(f"loads must be a [layers, experts] array, got shape "
                             f"{weight.shape}")
    if not np.all(np.isfinite(weight)) or (weight < 0).any():
        raise ParameterError("loads must be finite and non-negative")
    n_experts = weight.shape[1]
    for name, value in (("replicas", num_replicas), ("groups", num_groups),
                        ("nodes", num_nodes), ("GPUs", num_gpus)):
        if int(value) != value or value < 1:
            raise ParameterError(f"the number of {name} must be a positive integer, got {value}")
    if num_replicas % num_gpus:
        raise ParameterError(f"{num_replicas} replica slots do not split evenly over "
                             f"{num_gpus} GPUs")
    if num_replicas < n_experts:
        raise ParameterError(f"{num_replicas} replica slots cannot hold {n_experts} experts")
    if num_groups % num_nodes == 0:  # hierarchical; a global plan needs neither
        if n_experts % num_groups:
            raise ParameterError(f"{n_experts} experts do not split into {num_groups} groups")
        if num_gpus % num_nodes:
            raise ParameterError(f"{num_gpus} GPUs do not split evenly over {num_nodes} nodes "
                                 f"(the plan is hierarchical: {num_groups} groups divide by "
                                 "the nodes)")
    return weight


def gpu_loads(weight: np.ndarray, phy2log: np.ndarray, logcnt: np.ndarray,
              num_gpus: int) -> np.ndarray:
    """``[layers, num_gpus]``: each GPU's load, an expert's load split evenly over replicas."""
    per_slot = np.take_along_axis(weight / logcnt, phy2log, axis=1)
    return per_slot.reshape(weight.shape[0], num_gpus, -1).sum(axis=2)


def _best_of(weight, num_replicas, num_groups, num_nodes, num_gpus, eplb, samples, blocks):
    """Per layer, the best candidate plan (EPLB's, ``eplb``, first: it wins ties).

    Candidates: EPLB's plan; the same replicas with refined packings; replicas capped at one
    per GPU of the node (a replica beyond that shares a GPU with its twin, where it halves
    nothing), refined; and with samples, the last two for the mean load plus each of
    :data:`SPREAD_FACTORS` standard deviations of every expert's per-step share. Without
    samples the best has the smallest maximum GPU load under ``weight``; with samples the
    highest mean balancedness over (at most :data:`SELECT_SAMPLES` of) them among the plans
    that score higher than EPLB's, by :data:`BLOCK_MARGIN`, in each of ``blocks``
    consecutive blocks of them; a layer whose pick scores below EPLB's plan over all the
    samples keeps EPLB's.
    """
    variants = [weight]
    judged = None
    if samples is not None:
        judged = samples[:, spread_rows(samples.shape[1], SELECT_SAMPLES)]
        shares = _row_shares(weight)
        step_shares = judged / np.maximum(judged.sum(axis=2, keepdims=True), 1e-30)
        spread = step_shares.std(axis=1, dtype=np.float64)
        variants += [shares + k * spread for k in SPREAD_FACTORS]
    # every variant's rows planned at once, uncapped and capped at one replica per GPU of
    # the node (the packings loop over items, not rows)
    rows = weight.shape[0]
    count = len(variants)
    stacked = np.concatenate(variants + variants)
    caps = np.repeat([np.inf, num_gpus // num_nodes], count * rows)
    made = _hierarchical(stacked, num_replicas, num_groups, num_nodes, num_gpus, refine=True,
                         cap=caps)
    candidates = [eplb] + [tuple(a[v * rows:(v + 1) * rows] for a in made)
                           for v in range(2 * count)]
    layers = np.arange(weight.shape[0])

    def pick(best):
        return tuple(np.stack([c[k] for c in candidates])[best, layers] for k in range(3))

    if samples is None:
        peaks = np.stack([gpu_loads(weight, c[0], c[2], num_gpus).max(axis=1)
                          for c in candidates])  # [candidates, layers]
        return pick(np.argmin(peaks, axis=0))  # ties keep the earlier candidate (EPLB's)
    n_experts = weight.shape[1]
    steps = np.stack([step_balancedness(judged, replica_counts(c[0], n_experts, num_gpus))
                      for c in candidates])  # [candidates, layers, steps]
    per_block = block_means(steps, blocks)
    qualified = (per_block > per_block[:1] + BLOCK_MARGIN).all(axis=2)
    qualified[0] = True  # EPLB's plan, the one to beat
    best = np.argmax(np.where(qualified, steps.mean(axis=2, dtype=np.float64), -np.inf),
                     axis=0)  # ties keep the earlier candidate (EPLB's)
    if judged.shape[1] < samples.shape[1] and best.any():
        plan = pick(best)
        mine = mean_balancedness(samples, replica_counts(plan[0], n_experts, num_gpus))
        theirs = mean_balancedness(samples, replica_counts(eplb[0], n_experts, num_gpus))
        best = np.where(mine >= theirs, best, 0)
    return pick(best)


def _row_shares(weight: np.ndarray) -> np.ndarray:
    """Rows of ``weight`` as shares (a row without load: equal shares)."""
    total = weight.sum(axis=1, keepdims=True)
    return np.where(total > 0, weight / np.where(total > 0, total, 1.0), 1.0 / weight.shape[1])


def _replicate(weight: np.ndarray, num_phy: int, cap: np.ndarray | float | None = None
               ) -> tuple[np.ndarray, ...]:
    """Give each slot beyond the experts to the expert with the highest load per replica
    (among those below ``cap`` replicas, while any is; one cap, or one per row)."""
    rows, num_log = weight.shape
    phy2log = np.broadcast_to(np.arange(num_phy, dtype=np.int64), (rows, num_phy)).copy()
    rank = np.zeros((rows, num_phy), dtype=np.int64)
    logcnt = np.ones((rows, num_log), dtype=np.int64)
    row = np.arange(rows)
    for slot in range(num_log, num_phy):
        per_replica = weight / logcnt.astype(weight.dtype)
        if cap is not None:
            full = logcnt >= (cap[:, None] if np.ndim(cap) else cap)
            full &= ~full.all(axis=1, keepdims=True)  # every expert capped: lift the cap
            per_replica = np.where(full, -np.inf, per_replica)
        hottest = np.argmax(per_replica, axis=1)
        phy2log[:, slot] = hottest
        rank[:, slot] = logcnt[row, hottest]
        logcnt[row, hottest] += 1
    return phy2log, rank, logcnt


def _packing(weight: np.ndarray, num_packs: int, refine: bool) -> tuple[np.ndarray, np.ndarray]:
    pack, rank = greedy_packing(weight, num_packs, torch_order=not refine)
    if refine and weight.shape[1] > num_packs:
        pack = refine_packing(weight, pack, num_packs)
        rank = ranks_in_packs(pack, num_packs)
    return pack, rank


def _inverse(perm: np.ndarray) -> np.ndarray:
    inverse = np.empty_like(perm)
    np.put_along_axis(inverse, perm, np.arange(perm.shape[1])[None, :].repeat(len(perm), 0),
                      axis=1)
    return inverse


def _hierarchical(weight: np.ndarray, num_phy: int, num_groups: int, num_nodes: int,
                  num_gpus: int, *, refine: bool, cap: np.ndarray | float | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Groups onto nodes, replicas within nodes, replicas onto the node's GPUs; ``cap``:
    the most replicas per expert (one number, or one per layer; None: no cap)."""
    layers, num_log = weight.shape
    group_size = num_log // num_groups
    groups_per_node = num_groups // num_nodes
    per_gpu = num_phy // num_gpus
    log_per_node = num_log // num_nodes

    # 1. whole groups onto nodes; "mlog" numbers experts node by node
    group_load = weight.reshape(layers, num_groups, group_size).sum(axis=2)
    node, rank_in_node = _packing(group_load, num_nodes, refine)
    first = (node * groups_per_node + rank_in_node) * group_size  # [layers, groups]
    log2mlog = (first[:, :, None] + np.arange(group_size)).reshape(layers, num_log)
    mlog2log = _inverse(log2mlog)

    # 2. redundant slots inside each node
    node_weight = np.take_along_axis(weight, mlog2log, axis=1).reshape(-1, log_per_node)
    if np.ndim(cap):  # one cap per layer: one per (layer, node) row
        cap = np.repeat(np.asarray(cap, dtype=np.float64), num_nodes)
    phy2mlog, phyrank, mlogcnt = _replicate(node_weight, num_phy // num_nodes, cap)

    # 3. the node's replicas onto its GPUs, each carrying its expert's load / replicas
    replica_load = np.take_along_axis(node_weight / mlogcnt.astype(weight.dtype), phy2mlog,
                                      axis=1)
    gpu, rank_on_gpu = _packing(replica_load, num_gpus // num_nodes, refine)
    pphy2phy = _inverse(gpu * per_gpu + rank_on_gpu)

    pphy2mlog = np.take_along_axis(phy2mlog, pphy2phy, axis=1).reshape(layers, num_nodes, -1)
    pphy2mlog = (pphy2mlog + (np.arange(num_nodes) * log_per_node)[None, :, None]
                 ).reshape(layers, -1)
    phy2log = np.take_along_axis(mlog2log, pphy2mlog, axis=1)
    rank = np.take_along_axis(phyrank, pphy2phy, axis=1).reshape(layers, -1)
    logcnt = np.take_along_axis(mlogcnt.reshape(layers, -1), log2mlog, axis=1)
    return phy2log, rank, logcnt


def _log2phy(phy2log: np.ndarray, rank: np.ndarray, logcnt: np.ndarray) -> np.ndarray:
    layers, num_log = logcnt.shape
    width = int(logcnt.max())
    log2phy = np.full((layers, num_log * width), -1, dtype=np.int64)
    np.put_along_axis(log2phy, phy2log * width + rank,
                      np.broadcast_to(np.arange(phy2log.shape[1]), phy2log.shape), axis=1)
    return log2phy.reshape(layers, num_log, width)
