"""Packing weighted items into equal-count packs, vectorised over rows (layers, nodes).

Two pure functions: :func:`greedy_packing` is the longest-processing-time greedy that DeepSeek's
EPLB uses (items by weight, heaviest first, each to the lightest pack that still has room;
ties to the lowest pack), and :func:`refine_packing` improves any packing by pairwise swaps
out of the heaviest pack until no swap lowers it. Both keep exactly ``n / m`` items per pack.
Loops run over items, swap rounds or sorting passes, never over rows.

"Heaviest first" among equal weights follows :func:`sort_descending`: the order in which
EPLB's ``weight.sort(-1, descending=True)`` (PyTorch's CPU sort, not stable) leaves them.
That order is GNU libstdc++'s ``std::sort`` (an introsort) on (weight, index) pairs compared
by weight alone, which is what the PyTorch builds on Linux run; up to 16 items it is the
stable order (equal weights by index), beyond that the partitioning reorders equal weights.
"""

from __future__ import annotations

import numpy as np

#: at most this many swap rounds per item: every accepted swap strictly lowers the sorted pack
#: loads, so the search ends on its own; the cap only bounds a pathological case
MAX_ROUNDS_PER_ITEM = 4


def greedy_packing(weight: np.ndarray, num_packs: int, *, torch_order: bool = True
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``weight [X, n]`` -> (pack of each item, its rank within the pack), both ``[X, n]``.

    Equal weights are taken in EPLB's order (:func:`sort_descending`), or by index with
    ``torch_order=False`` (faster, for packings that are refined afterwards anyway).
    """
    rows, n = weight.shape
    per_pack = n // num_packs
    if per_pack == 1:
        index = np.broadcast_to(np.arange(n, dtype=np.int64), (rows, n)).copy()
        return index, np.zeros((rows, n), dtype=np.int64)
    order = (sort_descending(weight) if torch_order
             else np.argsort(-weight, axis=1, kind="stable"))
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


#: libstdc++'s ``_S_threshold``: introsort leaves segments this long to a final insertion sort
INSERTION_THRESHOLD = 16


def sort_descending(weight: np.ndarray) -> np.ndarray:
    """``[X, n]``: each row's item indices, heaviest first, equal weights in the order that
    ``torch.sort(descending=True)`` gives on CPU (libstdc++'s introsort).

    The introsort is replayed on all rows at once: each pass partitions every segment longer
    than 16 items around the median of three (Hoare's scheme, as libstdc++ writes it), a
    segment past the depth limit (2 log2 n levels; only adversarial inputs get there) is
    heap-sorted, and a stable sort of the resulting arrangement stands for the final
    insertion sort. Weights must not be NaN.
    """
    rows, n = weight.shape
    keys = np.array(weight, copy=True).reshape(-1)
    items = np.tile(np.arange(n, dtype=np.int64), rows)
    if n > INSERTION_THRESHOLD:
        # only rows with equal weights can come out in another order than by weight alone
        tied = np.flatnonzero((np.diff(np.sort(weight, axis=1), axis=1) == 0).any(axis=1))
        first = tied.astype(np.int64) * n
        length = np.full(tied.size, n, dtype=np.int64)
        depth = np.full(tied.size, 2 * (n.bit_length() - 1), dtype=np.int64)
        while first.size:
            spent = depth == 0
            if spent.any():
                _heapsort(keys, items, first[spent], length[spent])
                first, length, depth = first[~spent], length[~spent], depth[~spent]
                if not first.size:
                    break
            cut = _partition(keys, items, first, length)
            first, length, depth = (np.concatenate([first, cut]),
                                    np.concatenate([cut - first, first + length - cut]),
                                    np.concatenate([depth, depth]) - 1)
            longer = length > INSERTION_THRESHOLD
            first, length, depth = first[longer], length[longer], depth[longer]
    keys, items = keys.reshape(rows, n), items.reshape(rows, n)
    return np.take_along_axis(items, np.argsort(-keys, axis=1, kind="stable"), axis=1)


def _swap(keys: np.ndarray, items: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    keys[a], keys[b] = keys[b], keys[a]  # fancy indexing reads copies first
    items[a], items[b] = items[b], items[a]


def _partition(keys: np.ndarray, items: np.ndarray, first: np.ndarray,
               length: np.ndarray) -> np.ndarray:
    """One introsort pass over the segments ``[first, first + length)`` of the flat arrays,
    in place; returns each segment's cut.

    The median of items 1, n // 2 and n - 1 becomes the pivot at item 0. The left scan stops
    at the items not heavier than the pivot (L_0 < L_1 < ...), the right scan at those not
    lighter (R_0 > R_1 > ...), both in the order they were before the pass: the scans never
    cross a swapped item before they meet. Pairs k < K are swapped, K being the first k with
    L_k >= R_k, and the cut is min(L_K, R_{K-1}) (the left scan stops at R_{K-1} at the
    latest, which holds a light item once swapped).
    """
    a, b, c = first + 1, first + length // 2, first + length - 1
    ka, kb, kc = keys[a], keys[b], keys[c]
    median = np.where(ka > kb, np.where(kb > kc, b, np.where(ka > kc, c, a)),
                      np.where(ka > kc, a, np.where(kb > kc, c, b)))
    _swap(keys, items, first, median)

    segments = first.size
    count = length - 1  # the items after the pivot
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    seg = np.repeat(np.arange(segments), count)
    offset = np.arange(seg.size) - start[seg]  # position after the pivot, from 0
    value, pivot = keys[first[seg] + 1 + offset], keys[first][seg]
    left, right = value <= pivot, value >= pivot

    def within(mask: np.ndarray) -> np.ndarray:  # inclusive running count within the segment
        running = np.cumsum(mask)
        return running - (running - mask)[start][seg]

    rank_left = within(left) - 1
    right_in = within(right)
    rank_right = (right_in[start + count - 1])[seg] - right_in + right - 1  # from the end
    # per segment, count + 1 rows of (L_k, R_k): L padded with n (never reached), R with -1
    base = start + np.arange(segments)
    big = int(length.max())
    stops_left = np.full(seg.size + segments, big, dtype=np.int64)
    stops_right = np.full(seg.size + segments, -1, dtype=np.int64)
    stops_left[base[seg[left]] + rank_left[left]] = offset[left]
    stops_right[base[seg[right]] + rank_right[right]] = offset[right]
    row_seg = np.repeat(np.arange(segments), count + 1)
    k = np.arange(row_seg.size) - base[row_seg]
    meet = np.minimum.reduceat(np.where(stops_left >= stops_right, k, big), base)
    swapped = k < meet[row_seg]
    _swap(keys, items, first[row_seg[swapped]] + 1 + stops_left[swapped],
          first[row_seg[swapped]] + 1 + stops_right[swapped])
    last_swapped = np.where(meet > 0, stops_right[base + np.maximum(meet - 1, 0)], big)
    return first + 1 + np.minimum(stops_left[base + meet], last_swapped)


def _heapsort(keys: np.ndarray, items: np.ndarray, first: np.ndarray,
              length: np.ndarray) -> None:
    """libstdc++'s heap sort (``make_heap`` then ``sort_heap``) of each segment, in place, all
    segments in step."""
    width = int(length.max())
    where = first[:, None] + np.minimum(np.arange(width), length[:, None] - 1)
    k, i = keys[where], items[where]
    segments = np.arange(first.size)
    top = (length - 2) // 2
    for step in range(int(top.max()) + 1):  # make_heap: parents from the last one up
        parent = top - step
        on = parent >= 0
        rows, hole = segments[on], parent[on]
        _adjust_heap(k, i, rows, hole, length[on], k[rows, hole], i[rows, hole])
    for step in range(1, width):  # sort_heap: the top goes to the end, the end sifts down
        end = length - step
        on = end >= 1
        rows, end = segments[on], end[on]
        value_k, value_i = k[rows, end], i[rows, end]
        k[rows, end], i[rows, end] = k[rows, 0], i[rows, 0]
        _adjust_heap(k, i, rows, np.zeros_like(end), end, value_k, value_i)
    valid = np.arange(width)[None, :] < length[:, None]
    keys[where[valid]], items[where[valid]] = k[valid], i[valid]


def _adjust_heap(k: np.ndarray, i: np.ndarray, rows: np.ndarray, hole: np.ndarray,
                 length: np.ndarray, value_k: np.ndarray, value_i: np.ndarray) -> None:
    """libstdc++'s ``__adjust_heap`` (sift the hole down to a leaf, then push the value up)
    in rows ``rows`` of the padded segments, in step."""
    top, hole, child = hole.copy(), hole.copy(), hole.copy()
    while True:
        down = child < (length - 1) // 2
        if not down.any():
            break
        r, c = rows[down], 2 * (child[down] + 1)
        c = np.where(k[r, c] > k[r, c - 1], c - 1, c)
        k[r, hole[down]], i[r, hole[down]] = k[r, c], i[r, c]
        hole[down] = child[down] = c
    odd = (length % 2 == 0) & (child == (length - 2) // 2)  # a last parent with one child
    if odd.any():
        r, c = rows[odd], 2 * (child[odd] + 1) - 1
        k[r, hole[odd]], i[r, hole[odd]] = k[r, c], i[r, c]
        hole[odd] = c
    while True:
        parent = np.maximum((hole - 1) // 2, 0)
        up = (hole > top) & (k[rows, parent] > value_k)
        if not up.any():
            break
        r = rows[up]
        k[r, hole[up]], i[r, hole[up]] = k[r, parent[up]], i[r, parent[up]]
        hole[up] = parent[up]
    k[rows, hole], i[rows, hole] = value_k, value_i


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
