"""Placement: EPLB's planner reproduced, plan invariants, the default never worse than EPLB,
the replay's numbers by hand, no look-ahead for policies other than hindsight, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moetrace.errors import ParameterError
from moetrace.placement import (Cluster, gpu_loads, make_policies, rebalance_experts,
                                replica_counts, replay)
from moetrace.placement.cluster import align, balancedness, moved_replicas
from moetrace.placement.plan import plan_trace
from moetrace.trace.shares import Loads

# deepseek-ai/EPLB README: the published example
EPLB_WEIGHT = [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
               [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]
EPLB_PHY2LOG = [[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]]


def test_eplb_readme_example_reproduced_exactly():
    phy2log, log2phy, logcnt = rebalance_experts(EPLB_WEIGHT, 16, 4, 2, 8, planner="eplb")
    assert phy2log.tolist() == EPLB_PHY2LOG
    assert phy2log.dtype == log2phy.dtype == logcnt.dtype == np.int64
    assert logcnt.sum(axis=1).tolist() == [16, 16]


def _check_plan(weight, phy2log, log2phy, logcnt, slots, gpus):
    layers, experts = np.asarray(weight).shape
    assert phy2log.shape == (layers, slots)
    assert (logcnt >= 1).all() and (logcnt.sum(axis=1) == slots).all()
    for layer in range(layers):
        assert np.bincount(phy2log[layer], minlength=experts).tolist() == logcnt[layer].tolist()
        for expert in range(experts):
            listed = log2phy[layer, expert]
            valid = listed[listed >= 0]
            assert len(valid) == logcnt[layer, expert]
            assert (phy2log[layer, valid] == expert).all()  # log2phy inverts phy2log
            assert (listed[len(valid):] == -1).all()


@st.composite
def _problems(draw):
    gpus = draw(st.sampled_from([1, 2, 3, 4, 6, 8]))
    nodes = draw(st.sampled_from([1, 2, 3, 4]))
    # a hierarchical plan (groups divide by the nodes) needs the nodes to divide the GPUs; a
    # global one needs neither that nor groups that divide the experts
    groups = draw(st.sampled_from([g for g in (1, 2, 3, 4, 5, 8)
                                   if gpus % nodes == 0 or g % nodes]))
    per_group = draw(st.integers(1, 4))
    experts = (groups * per_group if groups % nodes == 0
               else draw(st.integers(1, 40)))
    extra_per_gpu = draw(st.integers(0, 3))
    slots = -(-experts // gpus) * gpus + extra_per_gpu * gpus
    layers = draw(st.integers(1, 3))
    kind = draw(st.sampled_from(["uniform", "zipf", "ties"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "uniform":
        weight = rng.random((layers, experts)) * 100
    elif kind == "zipf":
        weight = np.minimum(rng.zipf(1.3, (layers, experts)), 10_000) * rng.random((layers, experts))
    else:
        weight = rng.integers(0, 3, (layers, experts)).astype(float)
    return weight, slots, groups, nodes, gpus


@settings(max_examples=150, deadline=None)
@given(_problems())
def test_plans_are_valid_and_the_default_is_never_worse_than_eplb(problem):
    weight, slots, groups, nodes, gpus = problem
    plans = {}
    for planner in ("eplb", "balanced"):
        plans[planner] = rebalance_experts(weight, slots, groups, nodes, gpus, planner=planner)
        _check_plan(weight, *plans[planner], slots, gpus)
    peak = {p: gpu_loads(weight, plans[p][0], plans[p][2], gpus).max(axis=1) for p in plans}
    assert (peak["balanced"] <= peak["eplb"] * (1 + 1e-6) + 1e-9).all()


def test_default_is_clearly_better_on_a_skewed_load():
    # one expert takes most tokens: EPLB gives it 9 replicas on 8 GPUs (two share a GPU)
    weight = np.array([[1_000_000.0] + list(range(1, 64))])
    eplb = rebalance_experts(weight, 72, 1, 1, 8, planner="eplb")
    best = rebalance_experts(weight, 72, 1, 1, 8)
    ratio = (gpu_loads(weight, best[0], best[2], 8).max()
             / gpu_loads(weight, eplb[0], eplb[2], 8).max())
    assert eplb[2][0, 0] == 9 and best[2][0, 0] == 8
    assert ratio < 0.6


@pytest.mark.parametrize("args, problem", [
    ((EPLB_WEIGHT, 15, 4, 2, 8), "15 replica slots do not split evenly over 8 GPUs"),
    ((EPLB_WEIGHT, 8, 1, 1, 8), "8 replica slots cannot hold 12 experts"),
    ((EPLB_WEIGHT, 18, 6, 3, 2), "2 GPUs do not split evenly over 3 nodes"),
    (([[1.0, np.nan]], 2, 1, 1, 2), "finite and non-negative"),
    (([[1.0, -1.0]], 2, 1, 1, 2), "finite and non-negative"),
    (([1.0, 2.0], 2, 1, 1, 2), r"\[layers, experts\] array"),
    ((EPLB_WEIGHT, 16, 5, 1, 8), "12 experts do not split into 5 groups"),
])
def test_bad_arguments_are_one_line_errors(args, problem):
    with pytest.raises(ParameterError, match=problem):
        rebalance_experts(*args)


# -- the replay ------------------------------------------------------------------------------

def _loads(counts, steps=None):
    counts = np.asarray(counts, dtype=np.int64)
    steps = np.arange(counts.shape[1]) if steps is None else np.asarray(steps)
    return Loads(steps=steps, layers=list(range(counts.shape[0])), counts=counts)


def test_balancedness_and_time_by_hand_under_the_static_placement():
    # 4 experts on 2 GPUs: static puts experts 0, 1 on GPU 0 and 2, 3 on GPU 1
    counts = [[[3, 1, 2, 2], [4, 0, 1, 1], [0, 0, 5, 3], [2, 2, 2, 2]]]
    result = replay(_loads(counts), Cluster(gpus=2), make_policies(["static"], window=1,
                    predictor="naive"), interval=1, start=0, window=1)
    # scored steps 1..3: GPU tokens (4, 2), (0, 8), (4, 4)
    assert np.allclose(result.policies[0].balancedness[0], [3 / 4, 4 / 8, 1.0])
    row = next(r for r in result.rows() if r["layer"] is None and r["state"] == "all")
    assert row["time_vs_balanced"] == pytest.approx((4 + 8 + 4) / (3 + 4 + 4))
    assert row["balancedness"] == pytest.approx((0.75 + 0.5 + 1) / 3)
    assert balancedness(np.zeros((1, 2))).tolist() == [1.0]  # no tokens: nothing to wait for


def test_hindsight_and_window_on_a_constant_trace_are_perfect():
    counts = np.tile(np.array([[40, 30, 20, 10]]), (2, 50, 1))  # {40, 10} and {30, 20}
    result = replay(_loads(counts), Cluster(gpus=2),
                    make_policies(["static", "window", "hindsight"], window=10,
                                  predictor="naive"),
                    interval=10, window=10)
    by_name = {p.name: p for p in result.policies}
    assert np.allclose(by_name["hindsight"].balancedness, 1.0)
    assert np.allclose(by_name["window"].balancedness, 1.0)
    assert np.allclose(by_name["static"].balancedness, 50 / 70)
    # the first plan moves experts off the static placement; the same plan later moves nothing
    assert by_name["window"].moved[0].sum() > 0 and sum(m.sum() for m in
                                                        by_name["window"].moved[1:]) == 0


def test_no_policy_but_hindsight_sees_past_its_replan_step(sim_loads):
    loads = sim_loads
    cut = int(loads.steps[0]) + 2999  # the 2nd re-plan of a 1000-step grid from step 999
    other = loads.counts.copy()
    after = loads.steps > cut
    other[:, after] = np.random.default_rng(0).permutation(other[:, after], axis=2)
    changed = Loads(steps=loads.steps, layers=loads.layers, counts=other)
    names = ["window", "forecast:sw_avg", "adaptive:sw_avg", "hindsight"]
    online = np.zeros(loads.counts.shape[:2], dtype=bool)
    online[:, 1500:] = True

    def run(data):
        return replay(data, Cluster(gpus=4), make_policies(names, window=1000, predictor="naive"),
                      interval=1000, online_stable=online)

    a, b = run(loads), run(changed)
    for pa, pb in zip(a.policies, b.policies):
        early = [i for i, (t, _) in enumerate(pa.replans) if t <= cut]
        same = all(np.array_equal(pa.moved[i], pb.moved[i]) and
                   pa.replans[i][0] == pb.replans[i][0] for i in early)
        if pa.name == "hindsight":
            assert not same  # the hindsight plan looks ahead: the test can tell
        else:
            assert same, pa.name
    for source in ("window", "forecast"):
        plan_a = plan_trace(loads, Cluster(gpus=4), source=source, predictor="sw_avg", at=cut)
        plan_b = plan_trace(changed, Cluster(gpus=4), source=source, predictor="sw_avg", at=cut)
        assert np.array_equal(plan_a.phy2log, plan_b.phy2log)


@pytest.fixture
def sim_loads():
    from moetrace.trace import read_trace
    from pathlib import Path

    trace = read_trace(Path(__file__).resolve().parents[1] / "sample_traces" /
                       "gpt3-125m-sim.parquet")
    loads = trace.loads()
    return Loads(steps=loads.steps[:5000], layers=loads.layers[:2],
                 counts=loads.counts[:2, :5000])


def test_relabelling_gpus_keeps_replicas_in_place():
    rng = np.random.default_rng(1)
    weight = rng.random((3, 16)) * 10
    phy2log, _, _ = rebalance_experts(weight, 16, 1, 1, 4)
    plan = replica_counts(phy2log, 16, 4)
    shuffled = plan[:, :, rng.permutation(4)]  # the same plan with GPUs renamed
    assert moved_replicas(plan, align(shuffled, plan)).tolist() == [0, 0, 0]
    assert moved_replicas(plan, shuffled).sum() > 0


# -- the plan command ------------------------------------------------------------------------

SAMPLE = "sample_traces/gpt3-125m-sim.parquet"


def _moetrace(*args, cwd):
    return subprocess.run([sys.executable, "-m", "moetrace", *args], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture
def repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_plan_command_writes_a_valid_plan_and_sglang_map(repo, tmp_path):
    out, sglang = tmp_path / "plan.json", tmp_path / "sglang.json"
    proc = _moetrace("plan", SAMPLE, "--gpus", "8", "--redundant", "8", "--predictor",
                     "sw_avg", "-o", str(out), "--sglang", str(sglang), cwd=repo)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "moetrace.plan" and doc["cluster"]["replicas"] == 24
    phy2log, log2phy, logcnt = (np.array(doc[k]) for k in ("phy2log", "log2phy", "logcnt"))
    _check_plan(np.array(doc["estimated_shares"]), phy2log, log2phy, logcnt, 24, 8)
    assert np.allclose(np.array(doc["estimated_shares"]).sum(axis=1), 1)
    assert all(e["balancedness"] >= e["static_balancedness"] for e in doc["expected"])
    # what SGLang's init_by_mapping reads: one row per layer, every logical expert present
    rows = np.array(json.loads(sglang.read_text())["physical_to_logical_map"])
    assert rows.shape == (6, 24) and np.array_equal(rows, phy2log)
    assert all(set(row) == set(range(16)) for row in rows.tolist())
    again = _moetrace("plan", SAMPLE, "--gpus", "8", "-o", str(out), cwd=repo)
    assert again.returncode == 2 and "exists" in again.stderr


def test_plan_sglang_rows_follow_the_model_layers(tmp_path):
    loads = _loads(np.tile(np.array([[5, 3, 1, 1]]), (2, 20, 1)))
    plan = plan_trace(loads, Cluster(gpus=2, redundant=2), source="window", window=10,
                      source_layers=[1, 3])
    rows = np.array(plan.sglang()["physical_to_logical_map"])
    assert rows.shape == (4, 6)
    assert rows[0].tolist() == rows[2].tolist() == [0, 1, 2, 3, 0, 1]  # dense: trivial map
    assert np.array_equal(rows[[1, 3]], plan.phy2log)


def test_plan_simulate_json_and_bad_shapes(repo, tmp_path):
    out = tmp_path / "sim.json"
    proc = _moetrace("replay", SAMPLE, "--gpus", "8", "--policies",
                     "static,window,forecast:sw_avg,hindsight", "--json-out", str(out),
                     cwd=repo)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "moetrace.placement-replay" and doc["version"] == 1
    keys = {"policy", "layer", "state", "balancedness", "balancedness_p5", "time_vs_balanced",
            "replans", "replicas_moved", "bytes_moved", "moves", "move_seconds",
            "compute_seconds", "net_seconds_saved"}
    assert all(keys <= set(row) for row in doc["results"])
    assert doc["time_model"]["expert_params"] == 2 * 768 * 3072
    assert doc["time_model"]["stall_seconds"] == 1.0
    # the former spelling, plan --simulate --json, gives the same document (with a note)
    old = _moetrace("plan", SAMPLE, "--gpus", "8", "--simulate", "--policies",
                    "static,window", "--json", cwd=repo)
    assert old.returncode == 0 and "now `moetrace replay`" in old.stderr
    old_doc = json.loads(old.stdout)
    assert all(keys <= set(row) for row in old_doc["results"]) and "time_model" in old_doc
    overall = {r["policy"]: r for r in doc["results"] if r["layer"] is None
               and r["state"] == "all"}
    assert set(overall) == {"static", "window", "forecast:sw_avg", "hindsight"}
    assert all(0 < r["balancedness"] <= 1 for r in overall.values())
    assert overall["static"]["replans"] == 0 and overall["static"]["bytes_moved"] == 0
    assert overall["window"]["bytes_moved"] == overall["window"]["replicas_moved"] * 16 * \
        2 * 768 * 3072  # 125M: one expert is 2 x 768 x 3072 parameters, 16 bytes each
    for args, problem in [(["plan", "--gpus", "3"], "16 experts do not split evenly over 3 GPUs"),
                          (["plan", "--gpus", "8", "--replicas", "20"], "20 replica slots do not "
                                                                        "split evenly"),
                          (["replay", "--gpus", "8", "--policies", "magic"],
                           "unknown placement policy 'magic'"),
                          (["plan", "--gpus", "8", "--estimate", "hindsight"],
                           "needs the steps after")]:
        proc = _moetrace(args[0], SAMPLE, *args[1:], cwd=repo)
        assert proc.returncode == 2, (args, proc.stderr)
        assert problem in proc.stderr and proc.stderr.count("\n") == 1
