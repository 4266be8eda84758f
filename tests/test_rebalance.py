"""The planner as a drop-in for DeepSeek EPLB: equal loads in the order of PyTorch's CPU sort."""

from __future__ import annotations

import numpy as np
import pytest

from moetrace.placement import packing
from moetrace.placement.packing import greedy_packing, sort_descending

# A tie-heavy row that drives libstdc++'s introsort past its depth limit (2 log2 40 = 10
# levels) into its heap sort; made by running McIlroy's adversary against that sort and
# halving its values to create ties.
HEAP_SORTED = [10, 17, 16, 15, 14, 15, 13, 14, 13, 19, 18, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 12,
               9, 17, 8, 11, 7, 18, 6, 11, 5, 19, 4, 10, 3, 16, 2, 12, 1, 0]


# -- equal loads in torch's order, checked without torch ---------------------------------------

@pytest.mark.parametrize("row, order", [  # each order as torch.sort returned it (2.13, CPU)
    # up to 16 items: the stable order (equal loads by index)
    ([3, 1, 3, 0, 1, 3], [0, 2, 5, 1, 4, 3]),
    ([1] * 16, list(range(16))),
    # beyond: the median of items 1, 8 and 16 (item 8) becomes the pivot, the partition swaps
    # pairs from both ends, and the final insertion sort keeps that arrangement
    ([1] * 17, [8, 16, 15, 14, 13, 12, 11, 10, 9, 0, 7, 6, 5, 4, 3, 2, 1]),
    ([0, 1] * 10, [1, 19, 17, 15, 13, 11, 9, 7, 5, 3, 8, 6, 10, 12, 4, 14, 16, 2, 18, 0]),
    (HEAP_SORTED, [31, 9, 27, 10, 23, 1, 35, 2, 3, 5, 7, 4, 8, 6, 37, 21, 29, 25, 33, 0, 22,
                   11, 24, 12, 26, 13, 28, 14, 30, 15, 32, 16, 34, 17, 36, 18, 38, 19, 39, 20]),
])
def test_equal_loads_are_taken_in_torchs_cpu_sort_order(row, order):
    weight = np.array([row, row], dtype=np.float32)  # two rows: the passes run in step
    assert sort_descending(weight).tolist() == [order, order]


def test_the_heap_sort_row_reaches_the_depth_limit(monkeypatch):
    heapsorted = []
    real = packing._heapsort
    monkeypatch.setattr(packing, "_heapsort",
                        lambda keys, items, first, length: heapsorted.append(first.size)
                        or real(keys, items, first, length))
    rows = np.array([HEAP_SORTED, HEAP_SORTED, [1] * 40], dtype=np.float32)
    assert sort_descending(rows)[2].tolist() == sort_descending(rows[2:])[0].tolist()
    assert heapsorted == [2]  # both rows in one step, the third partitioned beside them


def test_greedy_packing_takes_equal_loads_in_that_order():
    weight = np.ones((1, 18), dtype=np.float32)
    pack, rank = greedy_packing(weight, 2)
    order = sort_descending(weight)[0]
    # equal loads alternate between the two packs, lowest pack first on a tie
    assert pack[0, order].tolist() == [0, 1] * 9
    assert rank[0, order].tolist() == [r for r in range(9) for _ in (0, 1)]


def test_sort_order_is_torchs_on_random_tie_heavy_rows():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for n in [*range(1, 70), 100, 255, 256, 257, 1000]:
        weight = rng.integers(0, int(rng.choice([2, 3, 10, 1000])), (5, n)).astype(np.float32)
        weight[1] = np.sort(weight[1])  # ascending and descending runs of ties
        weight[2] = np.sort(weight[2])[::-1]
        weight[3] = 0
        want = torch.from_numpy(weight).sort(-1, descending=True).indices.numpy()
        assert np.array_equal(sort_descending(weight), want), n
    heap = np.array([HEAP_SORTED, HEAP_SORTED[::-1]], dtype=np.float32)
    want = torch.from_numpy(heap).sort(-1, descending=True).indices.numpy()
    assert np.array_equal(sort_descending(heap), want)
