"""Packing weighted items into equal-count packs, vectorised over rows (layers, nodes).

Two pure functions: :func:`greedy_packing` is the longest-processing-time greedy that DeepSeek's
EPLB uses (items by weight, heaviest first, each to the lightest pack that still has room;
ties to the lowest pack), and :func:`refine_packing` improves any packing by pairwise swaps
out of the heaviest pack until no swap lowers it. Both keep exactly ``n / m`` items per pack.
Loops run over items or swap rounds, never over rows.
"""

from __future__ import annotations

import numpy as np

#: at most this many swap rounds per item: every accepted swap strictly lowers the sorted pack
#: loads, so the search ends on its own; the cap only bounds a pathological case
MAX_ROUNDS_PER_ITEM = 4


def greedy_packing(weight: np.ndarray, num_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """``weight [X, n]`` -> (pack of each item, its rank within the pack), both ``[X, n]``."""
    rows, n = weight.shape
    per_pack = n // num_packs
    if per_pack == 1:
        index = np.broadcast_to(np.arange(n, dtype=np.int64), (rows, n)).copy()
        return index, np.zeros((rows, n), dtype=np.int64)
    order = np.argsort(-weight, axis=1, kind="stable")
    pack = np.full((rows, n), -1, dtype=np.int64)
    rank = np.full((rows, n), -1, dtype=np.int64)
    loads = np.zeros((rows, num_packs), dtype=weight.dtype)
    filled = np.zeros((rows, num_packs), dtype=np.int64)
    row = np.arange(rows)
    for j in range(n):
        item = order[:, j]
        open_loads = np.where(filled < per_pack, loads, np.inf)
        chosen = np.argmin(open_loads, axis=1)
        pack[row, item] = chosen
        rank[row, item] = filled[row, chosen]
        loads[row, chosen] += weight[row, item]
        filled[row, chosen] += 1
    return pack, rank


def pack_loads(weight: np.ndarray, pack: np.ndarray, num_packs: int) -> np.ndarray:
    """``[X, num_packs]``: the summed weight of each pack."""
    rows = weight.shape[0]
    loads = np.zeros((rows, num_packs), dtype=np.float64)
    np.add.at(loads, (np.arange(rows)[:, None], pack), weight)
    return loads


def refine_packing(weight: np.ndarray, pack: np.ndarray, num_packs: int) -> np.ndarray:
    """Swap items between the heaviest pack and another while that lowers the heavier of the
    two below the heaviest pack's load; returns the new pack of each item (counts unchanged).

    Each round takes, in every row still improving, the swap that minimises the larger of the
    two new loads. The maximum pack load never rises, so the result is never worse than
    ``pack``.
    """
    weight = np.asarray(weight, dtype=np.float64)
    pack = pack.copy()
    rows, n = weight.shape
    if num_packs < 2 or n == num_packs:
        return pack
    active = np.ones(rows, dtype=bool)
    scale = np.maximum(weight.sum(axis=1), 1e-300)
    for _ in range(MAX_ROUNDS_PER_ITEM * n):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        w, p = weight[idx], pack[idx]
        loads = pack_loads(w, p, num_packs)
        heavy = np.argmax(loads, axis=1)
        top = loads[np.arange(idx.size), heavy]
        in_heavy = p == heavy[:, None]  # [X, n]; every pack holds exactly n / m items
        members = np.nonzero(in_heavy)[1].reshape(idx.size, -1)  # [X, k] heavy items
        other = loads[np.arange(idx.size)[:, None], p]  # load of each item's pack
        # swap item i (in the heavy pack) with item j (elsewhere): the two new loads
        w_i = np.take_along_axis(w, members, axis=1)
        delta = w[:, None, :] - w_i[:, :, None]  # [X, k, n] = w_j - w_i
        worst = np.maximum(top[:, None, None] + delta, other[:, None, :] - delta)
        worst = np.where(in_heavy[:, None, :], np.inf, worst)
        flat = worst.reshape(idx.size, -1)
        best = flat.argmin(axis=1)
        gain = top - flat[np.arange(idx.size), best]
        better = gain > 1e-12 * scale[idx]
        if not better.any():
            break
        slot, j = np.divmod(best[better], n)
        rows_better = np.arange(idx.size)[better]
        i = members[rows_better, slot]
        pi, pj = p[rows_better, i], p[rows_better, j]
        p[rows_better, i], p[rows_better, j] = pj, pi
        pack[idx] = p
        active[idx[~better]] = False
    return pack


def ranks_in_packs(pack: np.ndarray, num_packs: int) -> np.ndarray:
    """The rank of each item within its pack (items in index order), ``[X, n]``."""
    rows, n = pack.shape
    order = np.argsort(pack, axis=1, kind="stable")
    sorted_pack = np.take_along_axis(pack, order, axis=1)
    starts = np.zeros((rows, num_packs + 1), dtype=np.int64)
    np.add.at(starts, (np.arange(rows)[:, None], sorted_pack + 1), 1)
    starts = np.cumsum(starts, axis=1)
    position = np.arange(n)[None, :] - np.take_along_axis(starts, sorted_pack, axis=1)
    rank = np.empty_like(pack)
    np.put_along_axis(rank, order, position, axis=1)
    return rank
