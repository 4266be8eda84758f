"""The planner as a drop-in for DeepSeek EPLB: every shape EPLB accepts, EPLB's own arrays for
``planner="eplb"`` (checked against an independent reference of EPLB's documented algorithm,
written with the torch calls EPLB makes, on tie-heavy random inputs), equal loads in the
order of PyTorch's CPU sort, and the ``planner`` keyword with ``policy`` as its old name."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from test_placement import EPLB_PHY2LOG, EPLB_WEIGHT

from moetrace.errors import ParameterError
from moetrace.placement import gpu_loads, rebalance_experts
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


# -- shapes EPLB accepts -----------------------------------------------------------------------

@pytest.mark.parametrize("planner", ["eplb", "balanced"])
@pytest.mark.parametrize("experts, replicas, groups, nodes, gpus", [
    (64, 80, 8, 3, 8),    # the issue: 8 groups over 3 nodes, 8 GPUs over 3 nodes
    (12, 16, 13, 2, 8),   # more groups than experts
    (12, 16, 5, 2, 8),    # groups that do not divide the experts
    (12, 16, 1, 16, 8),   # more nodes than GPUs
    (15, 18, 2, 4, 3),    # experts that no GPU count divides
])
def test_groups_that_do_not_divide_by_the_nodes_give_the_global_plan(experts, replicas, groups,
                                                                     nodes, gpus, planner):
    weight = np.random.default_rng(experts).integers(0, 50, (3, experts)).astype(float)
    got = rebalance_experts(weight, replicas, groups, nodes, gpus, planner=planner)
    global_plan = rebalance_experts(weight, replicas, 1, 1, gpus, planner=planner)
    for a, b in zip(got, global_plan):
        assert np.array_equal(a, b)
    assert got[0].shape == (3, replicas) and (got[2].sum(axis=1) == replicas).all()


@pytest.mark.parametrize("args, problem", [
    ((EPLB_WEIGHT, 24, 4, 4, 6), "6 GPUs do not split evenly over 4 nodes"),
    ((EPLB_WEIGHT, 16, 8, 2, 8), "12 experts do not split into 8 groups"),
    ((EPLB_WEIGHT, 16, 4, 0, 8), "number of nodes must be a positive integer"),
])
def test_a_hierarchical_plan_still_needs_its_splits(args, problem):
    with pytest.raises(ParameterError, match=problem):
        rebalance_experts(*args)


# -- the planner keyword -----------------------------------------------------------------------

def test_planner_keyword_and_the_deprecated_policy_alias():
    eplb = rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8, planner="eplb")
    assert eplb[0].tolist() == EPLB_PHY2LOG
    with pytest.warns(DeprecationWarning, match="pass planner="):
        old = rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8, policy="eplb")
    assert all(np.array_equal(a, b) for a, b in zip(eplb, old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the planner keyword and the default warn about nothing
        default = rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8)
        balanced = rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8, planner="balanced")
    assert all(np.array_equal(a, b) for a, b in zip(default, balanced))
    with pytest.warns(DeprecationWarning), pytest.raises(ParameterError, match="disagree"):
        rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8, planner="balanced", policy="eplb")
    with pytest.raises(ParameterError, match="unknown planner 'greedy'"):
        rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8, planner="greedy")
    # EPLB's positional contract is unchanged
    positional = rebalance_experts(np.array(EPLB_WEIGHT), 16, 4, 2, 8)
    assert all(np.array_equal(a, b) for a, b in zip(default, positional))


# -- against an independent reference of EPLB's algorithm (torch) ------------------------------

def _reference_packing(torch, weight, packs):
    """EPLB's balanced packing as documented: items heaviest first (torch's sort), each to the
    lightest pack with room (the lowest on a tie; loads summed in float32), n / packs items per
    pack; with one item per pack, item i goes to pack i."""
    rows, n = weight.shape
    size = n // packs
    if size == 1:
        return [list(range(n))] * rows, [[0] * n] * rows
    order = weight.float().sort(-1, descending=True).indices
    pack, rank = [[-1] * n for _ in range(rows)], [[-1] * n for _ in range(rows)]
    for row in range(rows):
        load, filled = torch.zeros(packs, dtype=torch.float32), [0] * packs
        for item in order[row].tolist():
            chosen = min((p for p in range(packs) if filled[p] < size),
                         key=lambda p: load[p].item())
            pack[row][item], rank[row][item] = chosen, filled[chosen]
            filled[chosen] += 1
            load[chosen] += weight[row, item]
    return pack, rank


def _eplb_reference(torch, weight, replicas, groups, nodes, gpus):
    """EPLB's documented algorithm, one layer and node at a time: groups onto nodes, the
    node's redundant slots one by one to the expert with the highest load per replica
    (``.max(dim=-1)``), the node's replicas onto its GPUs; the global policy when the groups
    do not divide by the nodes."""
    w = torch.as_tensor(np.asarray(weight)).float()
    if groups % nodes:
        groups = nodes = 1
    layers, experts = w.shape
    size = experts // groups
    node_slots, node_gpus, gpu_slots = replicas // nodes, gpus // nodes, replicas // gpus
    group_node, group_rank = _reference_packing(torch, w.view(layers, groups, size).sum(-1),
                                                nodes)
    phy2log = np.full((layers, replicas), -1)
    replica_rank = np.full((layers, replicas), -1)
    logcnt = np.zeros((layers, experts), dtype=np.int64)
    for layer in range(layers):
        for node in range(nodes):
            mine = sorted((g for g in range(groups) if group_node[layer][g] == node),
                          key=lambda g: group_rank[layer][g])
            here = [g * size + i for g in mine for i in range(size)]
            load = w[layer, here][None, :]
            count = torch.ones(load.shape, dtype=torch.int64)
            made, ranks = list(range(len(here))), [0] * len(here)
            for _ in range(node_slots - len(here)):
                hot = (load / count).max(dim=-1).indices.item()
                made.append(hot)
                ranks.append(int(count[0, hot]))
                count[0, hot] += 1
            gpu, on_gpu = _reference_packing(torch, (load / count)[:, made], node_gpus)
            for j, local in enumerate(made):
                slot = node * node_slots + gpu[0][j] * gpu_slots + on_gpu[0][j]
                phy2log[layer, slot], replica_rank[layer, slot] = here[local], ranks[j]
            logcnt[layer, here] = count[0].numpy()
    log2phy = np.full((layers, experts, logcnt.max()), -1)
    for layer in range(layers):
        for slot in range(replicas):
            log2phy[layer, phy2log[layer, slot], replica_rank[layer, slot]] = slot
    return phy2log, log2phy, logcnt


def _random_case(rng):
    """A tie-heavy problem of a shape EPLB accepts, hierarchical or global."""
    gpus = int(rng.choice([1, 2, 3, 4, 6, 8, 12, 16]))
    if rng.random() < 0.5:  # hierarchical: groups divide by the nodes, GPUs too
        nodes = int(rng.choice([n for n in (1, 2, 3, 4) if gpus % n == 0]))
        groups = nodes * int(rng.choice([1, 2, 3, 5, 8]))
        experts = groups * int(rng.integers(1, 5))
    else:  # global: the groups do not divide by the nodes; nothing else needs to
        nodes = int(rng.integers(2, 6))
        groups = int(rng.choice([g for g in range(1, 34) if g % nodes]))
        experts = int(rng.integers(1, 49))
    replicas = (-(-experts // gpus) + int(rng.integers(0, 4))) * gpus
    layers = int(rng.integers(1, 5))
    kind = rng.choice(["small", "equal", "zeros", "tied groups", "counts", "floats"])
    if kind == "small":
        weight = rng.integers(0, 3, (layers, experts)).astype(float)
    elif kind == "equal":  # all-equal rows, a zero row among them
        weight = np.repeat(rng.integers(0, 4, (layers, 1)), experts, axis=1).astype(float)
    elif kind == "zeros":  # mostly zero, a few hot experts
        weight = rng.integers(0, 100, (layers, experts)) * (rng.random((layers, experts)) < 0.2)
    elif kind == "tied groups":  # every group the same loads in another order: tied sums
        size = experts // groups if experts % groups == 0 else experts
        base = rng.integers(0, 5, size)
        weight = np.array([np.concatenate([rng.permutation(base)
                                           for _ in range(experts // size)])
                           for _ in range(layers)])
    elif kind == "counts":
        weight = rng.integers(0, 1_000_000, (layers, experts))
    else:
        weight = rng.random((layers, experts)) * 1000
    return np.asarray(weight, dtype=float), replicas, groups, nodes, gpus


CASES = 400


def test_eplb_planner_matches_a_reference_of_eplbs_algorithm():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(24)
    cases = [(np.array(EPLB_WEIGHT, dtype=float), 16, 4, 2, 8)]
    cases += [_random_case(rng) for _ in range(CASES)]
    seen = {"global, GPUs not split by nodes": 0, "ties beyond 16 items": 0, "all equal": 0}
    for weight, replicas, groups, nodes, gpus in cases:
        want = _eplb_reference(torch, weight, replicas, groups, nodes, gpus)
        got = rebalance_experts(weight, replicas, groups, nodes, gpus, planner="eplb")
        problem = (weight.tolist(), replicas, groups, nodes, gpus)
        for name, a, b in zip(("phy2log", "log2phy", "logcnt"), got, want):
            assert np.array_equal(a, b), (name, problem)
        seen["global, GPUs not split by nodes"] += bool(groups % nodes and gpus % nodes)
        per_node = replicas // (1 if groups % nodes else nodes)
        seen["ties beyond 16 items"] += per_node > 16 and any(
            len(set(row)) < len(row) for row in weight.tolist())
        seen["all equal"] += any(len(set(row)) == 1 for row in weight.tolist())
    assert cases[0][0].tolist() == EPLB_WEIGHT and \
        rebalance_experts(*cases[0], planner="eplb")[0].tolist() == EPLB_PHY2LOG
    # the shapes and ties the check is for are really there
    assert min(seen.values()) >= 40, seen


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


def test_torch_tensors_are_accepted_on_any_dtype():
    torch = pytest.importorskip("torch")
    plain = rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8, planner="eplb")
    for tensor in (torch.tensor(EPLB_WEIGHT), torch.tensor(EPLB_WEIGHT, dtype=torch.bfloat16),
                   torch.tensor(EPLB_WEIGHT, dtype=torch.float32, requires_grad=True)):
        got = rebalance_experts(tensor, 16, 4, 2, 8, planner="eplb")
        assert all(np.array_equal(a, b) for a, b in zip(got, plain)), tensor.dtype


def test_balanced_is_never_worse_on_the_reference_cases():
    rng = np.random.default_rng(25)
    for _ in range(150):
        weight, replicas, groups, nodes, gpus = _random_case(rng)
        peaks = [gpu_loads(weight, plan[0], plan[2], gpus).max(axis=1) for plan in (
            rebalance_experts(weight, replicas, groups, nodes, gpus, planner=p)
            for p in ("eplb", "balanced"))]
        assert (peaks[1] <= peaks[0] * (1 + 1e-6) + 1e-9).all()
