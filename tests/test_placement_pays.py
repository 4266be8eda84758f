"""Placement that pays: plans for the interval as it will be (never below EPLB's on what they
are judged by), re-plans that move little, the time model by hand, the hindsight plan and
"gap closed" at one cadence, the recommendation, vllm-ascend's expert map, the imbalance
presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import long_frame, run_cli
from moetrace.errors import ParameterError
from moetrace.placement import Cluster, TimeModel, make_policies, replay
from moetrace.placement.estimates import Estimates
from moetrace.placement.formats import read_vllm_ascend_map, vllm_ascend_map
from moetrace.placement.plan import plan_trace
from moetrace.placement.rebalance import plan_experts
from moetrace.placement.recommend import RECOMMENDATION_KEYS, Grid, recommend
from moetrace.placement.scoring import mean_balancedness, replica_counts
from moetrace.placement.timing import gpu_moves
from moetrace.simulate import make_config, simulate_counts
from moetrace.trace.schema import TraceMetadata
from moetrace.trace.shares import Loads
from moetrace.trace.write import write_trace

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _loads(counts, steps=None):
    counts = np.asarray(counts, dtype=np.int64)
    steps = np.arange(counts.shape[1]) if steps is None else np.asarray(steps)
    return Loads(steps=steps, layers=list(range(counts.shape[0])), counts=counts)


def _sim(preset="gpt3-125m", *, steps=2000, layers=2, experts=16, tokens=65536, top_k=1,
         seed=0, **scenario):
    config = make_config(preset, steps=steps, layers=layers, experts=experts,
                         tokens_per_step=tokens, top_k=top_k, **scenario)
    counts, _ = simulate_counts(config, seed=seed)
    return _loads(counts)


def _mean(result, name):
    return float(next(p for p in result.policies if p.name == name).balancedness.mean())


# -- the planner: for the steps, never below EPLB on them --------------------------------------

@st.composite
def _shapes(draw):
    gpus = draw(st.sampled_from([2, 4, 8]))
    hierarchical = draw(st.booleans())
    nodes, groups = (2, 4) if hierarchical else (1, 1)
    experts = draw(st.sampled_from([8, 16, 32]))
    redundant = draw(st.sampled_from([0, gpus, 2 * gpus]))
    return gpus, nodes, groups, experts, experts + redundant


@settings(max_examples=60, deadline=None)
@given(_shapes(), st.integers(0, 2**32 - 1), st.sampled_from(["bursty", "zipf", "flat"]))
def test_a_plan_for_the_samples_never_scores_below_eplbs_on_them(shape, seed, kind):
    """The guarantee of the default planner with samples: over the samples it was given, its
    plan's mean balancedness is at least EPLB's plan's of the same loads (both computed as
    the replay computes them)."""
    gpus, nodes, groups, experts, slots = shape
    rng = np.random.default_rng(seed)
    steps = 300
    base = rng.zipf(1.5, (2, 1, experts)).clip(max=50) if kind == "zipf" else \
        np.ones((2, 1, experts))
    samples = rng.poisson(base * 20, (2, steps, experts)).astype(float)
    if kind == "bursty":  # a random quarter of the experts bursts every fourth step
        hot = rng.permutation(experts)[:max(1, experts // 4)]
        samples[:, 3::4, hot] *= 6
    weight = samples.sum(axis=1)
    planned = plan_experts(weight, slots, groups, nodes, gpus, samples=samples)
    mine = mean_balancedness(samples, replica_counts(planned.phy2log, experts, gpus))
    eplb = mean_balancedness(samples, replica_counts(planned.eplb_phy2log, experts, gpus))
    assert (mine >= eplb - 1e-9).all()


def test_the_samples_change_the_plan_where_steps_vary():
    """Bursts EPLB's plan of the mean cannot see: the plan for the steps splits the experts
    that burst together and scores clearly higher on those steps."""
    loads = _sim("burst", steps=1000, layers=1, experts=32, tokens=65536, top_k=2)
    samples = loads.counts
    weight = samples.sum(axis=1).astype(float)
    planned = plan_experts(weight, 40, 1, 1, 8, samples=samples)
    plain = plan_experts(weight, 40, 1, 1, 8)  # the mean alone, as before
    mine = mean_balancedness(samples, replica_counts(planned.phy2log, 32, 8))
    eplb = mean_balancedness(samples, replica_counts(planned.eplb_phy2log, 32, 8))
    mean_only = mean_balancedness(samples, replica_counts(plain.phy2log, 32, 8))
    assert mine[0] > eplb[0] + 0.01 and mine[0] > mean_only[0] + 0.01


def test_samples_that_do_not_fit_are_one_line_errors():
    with pytest.raises(ParameterError, match="samples must be a"):
        plan_experts(np.ones((2, 8)), 8, 1, 1, 4, samples=np.ones((2, 5, 7)))
    with pytest.raises(ParameterError, match="finite and non-negative"):
        plan_experts(np.ones((1, 8)), 8, 1, 1, 4, samples=-np.ones((1, 5, 8)))


# -- the replay: hindsight guaranteed, window and forecast measured ------------------------------

@st.composite
def _traces(draw):
    gpus, nodes, groups, experts, slots = draw(_shapes())
    seed = draw(st.integers(0, 10**6))
    tokens = draw(st.sampled_from([4096, 65536]))
    top_k = draw(st.sampled_from([1, 2]))
    return (_sim(steps=2000, experts=experts, tokens=tokens, top_k=top_k, seed=seed),
            gpus, nodes, groups, slots - experts)


#: the most the window policy of the default planner may fall below EPLB's planner on the
#: draws below. Measured, not a bound: the window's samples are the steps before the plan;
#: on 2,000 random draws of this domain (seeds 7-16) it fell below on 33, 6 of them by more
#: than 0.1 point, the worst by 2.23 points (docs/placement.md, "What is guaranteed")
WINDOW_WORST = 0.0025
#: the same for the forecast policy, which replaces EPLB's plan only where it wins in both of
#: its sample scenarios (moetrace.placement.estimates.SCENARIOS): on the same 2,000 draws it
#: fell below on 12, 3 by more than 0.1 point, the worst by 0.63 points (with the forecast's
#: level alone, on the first 600 of them: 50, by up to 0.55 points); on the draws here, not
#: measurably
FORECAST_WORST = 1e-5


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True)
@given(_traces())
def test_replay_default_planner_against_eplbs(trace):
    """In replay, with the same estimates: the hindsight plan is never below EPLB's planner
    (its samples are the very steps it is held for: a guarantee, to float32 rounding), and
    the window and forecast policies, whose steps to come are unknown, are measured: never
    more than WINDOW_WORST and FORECAST_WORST below it."""
    loads, gpus, nodes, groups, redundant = trace
    names = ["window", "forecast:sw_avg", "hindsight"]
    out = {planner: replay(loads, Cluster(gpus=gpus, nodes=nodes, groups=groups,
                                          redundant=redundant, planner=planner),
                           make_policies(names), interval=500, window=500)
           for planner in ("eplb", "balanced")}
    assert _mean(out["balanced"], "hindsight") >= _mean(out["eplb"], "hindsight") - 1e-6
    for name, worst in (("window", WINDOW_WORST), ("forecast:sw_avg", FORECAST_WORST)):
        assert _mean(out["balanced"], name) >= _mean(out["eplb"], name) - worst, name


@pytest.mark.slow
@pytest.mark.parametrize("path, gpus, redundant, interval", [
    ("sample_traces/demo-real.parquet", 4, 8, 1000),
    ("sample_traces/gpt3-125m-sim.parquet", 8, 8, 1000),
    ("sample_traces/gpt3-350m-sim.parquet", 16, 16, 1000),
    ("sample_traces/demo-sampled", 4, 4, 500),
])
def test_on_the_bundled_traces_the_default_planner_is_at_least_eplbs(path, gpus, redundant,
                                                                      interval):
    from moetrace.trace import read_trace

    loads = read_trace(ROOT / path).loads()
    names = ["window", "forecast:sw_avg", "hindsight"]
    out = {planner: replay(loads, Cluster(gpus=gpus, redundant=redundant, planner=planner),
                           make_policies(names, window=interval), interval=interval,
                           window=interval)
           for planner in ("eplb", "balanced")}
    for name in names:
        assert _mean(out["balanced"], name) >= _mean(out["eplb"], name) - 1e-6, name


def test_higher_where_step_to_step_variation_is_large():
    """Megatron's rotating hotspot (W6): a hot quarter of the experts moving every 3 steps.
    EPLB plans for the mean, which hides it; the default plans for the steps."""
    loads = _sim("hotspot", steps=1500, layers=1, experts=32, tokens=65536, top_k=2)
    out = {planner: replay(loads, Cluster(gpus=8, redundant=8, planner=planner),
                           make_policies(["window", "hindsight"], window=500), interval=500,
                           window=500)
           for planner in ("eplb", "balanced")}
    for name in ("window", "hindsight"):
        assert _mean(out["balanced"], name) > _mean(out["eplb"], name) + 0.02


def test_hindsight_samples_are_the_replayed_steps():
    """The cost model the planner judges by is the replay's: scored on the interval's own
    steps, a plan's mean balancedness is what the replay reports for it there."""
    loads = _sim(steps=1200)
    result = replay(loads, Cluster(gpus=4, redundant=4), make_policies(["hindsight"]),
                    interval=200, window=200, start=999)
    policy = result.policies[0]
    estimates = Estimates(loads, 200)
    first = estimates.samples("hindsight", 999)
    assert first.shape[1] == 200
    reached = mean_balancedness(first, policy.final)  # the last plan: steps 1000..1199
    assert np.allclose(reached, policy.balancedness.mean(axis=1, dtype=np.float64),
                       atol=1e-6)


# -- re-plans that move little -------------------------------------------------------------------

def test_replans_move_fewer_replicas_than_from_scratch_for_nearly_the_same_balance():
    from moetrace.trace import read_trace

    loads = read_trace(ROOT / "sample_traces/gpt3-125m-sim.parquet").loads()
    names = ["window", "hindsight"]
    little = replay(loads, Cluster(gpus=8, redundant=8), make_policies(names), interval=1000)
    scratch = replay(loads, Cluster(gpus=8, redundant=8, move_tolerance=None),
                     make_policies(names), interval=1000)
    rows = {(r["policy"], k): r for k, res in (("little", little), ("scratch", scratch))
            for r in res.rows() if r["layer"] is None and r["state"] == "all"}
    for name in names:
        fewer, fresh = rows[(name, "little")], rows[(name, "scratch")]
        assert fewer["moves"] < 0.9 * fresh["moves"], name
        assert fewer["moves"] < fewer["moves_from_scratch"]
        assert fresh["moves"] == fresh["moves_from_scratch"]  # from scratch: the same
        assert fewer["balancedness"] >= fresh["balancedness"] - 0.005, name


# -- the time model ------------------------------------------------------------------------------

def test_gpu_moves_split_into_own_node_and_other_nodes():
    old = np.zeros((1, 3, 4), dtype=np.int64)
    old[0, 0, 0] = old[0, 1, 2] = old[0, 2, 3] = 1  # nodes: GPUs {0, 1} and {2, 3}
    new = old.copy()
    new[0, 0, 1] = 1  # expert 0 onto GPU 1: its node holds it (GPU 0)
    new[0, 1, 0] = 1  # expert 1 onto GPU 0: only node 1 holds it
    new[0, 2, 2] = 1  # expert 2 onto GPU 2: node 1 holds it (GPU 3)
    near, far = gpu_moves(old, new, nodes=2)
    assert near.tolist() == [[0, 1, 1, 0]] and far.tolist() == [[1, 0, 0, 0]]


def test_seconds_by_hand():
    # 4 experts on 2 GPUs; static: GPU 0 holds experts 0, 1
    counts = np.array([[[30, 10, 5, 5], [30, 10, 5, 5], [30, 10, 5, 5]]])
    model = TimeModel(expert_params=1000, bytes_per_param=2, gpu_flops=1e6,
                      intra_node_bandwidth=1e6, inter_node_bandwidth=1e5, stall_seconds=0.5)
    result = replay(_loads(counts), Cluster(gpus=2), make_policies(["static", "window"],
                    window=1), interval=1, start=0, window=1, time_model=model)
    rows = {r["policy"]: r for r in result.rows() if r["layer"] is None
            and r["state"] == "all"}
    per_token = 6 * 1000 / 1e6  # 6 FLOPs per parameter and token, at 1 MFLOP/s
    assert rows["static"]["compute_seconds"] == pytest.approx(2 * 40 * per_token)
    # two slots per GPU: the window plan at step 0 pairs expert 0 with a light one, GPU
    # loads 35 and 15 on steps 1 and 2
    window = rows["window"]
    assert window["compute_seconds"] == pytest.approx(2 * 35 * per_token)
    assert window["compute_seconds_saved"] == pytest.approx(2 * 5 * per_token)
    assert window["moves"] == 2  # experts 1 and 2 (or 3) swap GPUs
    # each GPU receives one replica of 2,000 bytes from its node at 1 MB/s, in parallel,
    # and a synchronous re-plan stops for 0.5 s
    assert window["move_seconds"] == pytest.approx(2000 / 1e6 + 0.5)
    assert window["net_seconds_saved"] == pytest.approx(
        window["compute_seconds_saved"] - window["move_seconds"])
    assert window["net_seconds_saved_per_step"] == pytest.approx(
        window["net_seconds_saved"] / 2)
    doc = result.document("t")
    assert doc["time_model"]["seconds_per_token"] == pytest.approx(per_token)
    assert doc["time_model"]["rearrangement"] == "sync"
    # the verdict a report states: the best policy by net seconds, here paying nothing
    assert doc["verdict"]["policy"] == "window" and doc["verdict"]["pays"] is False
    assert doc["verdict"]["net_seconds_saved"] == pytest.approx(window["net_seconds_saved"])


def test_asynchronous_rearrangement_pays_no_stall_and_unknown_sizes_give_no_seconds():
    counts = np.array([[[30, 10, 5, 5]] * 3])
    run = lambda model: next(r for r in replay(  # noqa: E731
        _loads(counts), Cluster(gpus=2), make_policies(["window"], window=1), interval=1,
        start=0, window=1, time_model=model).rows() if r["layer"] is None
        and r["state"] == "all")
    row = run(TimeModel(expert_params=1000, rearrangement="async"))
    assert row["move_seconds"] == pytest.approx(1000 * 16 / 400e9)
    unknown = run(TimeModel())
    assert unknown["compute_seconds"] is None and unknown["net_seconds_saved"] is None
    with pytest.raises(ParameterError, match="rearrangement"):
        TimeModel(rearrangement="later")


# -- the hindsight plan, and gap closed at one cadence -------------------------------------------

def test_oracle_is_the_hindsight_plan_under_its_former_name():
    notes: list[str] = []
    made = make_policies(["oracle"], notes=notes)
    assert made[0].name == "hindsight" and "now called 'hindsight'" in notes[0]
    estimates = Estimates(_sim(steps=600), 100)
    assert np.array_equal(estimates.estimate("oracle", 300), estimates.hindsight(300))


def test_gap_closed_only_between_policies_at_one_cadence():
    loads = _sim(steps=3000)
    online = np.ones(loads.counts.shape[:2], dtype=bool)
    result = replay(loads, Cluster(gpus=4, redundant=4),
                    make_policies(["window", "forecast:sw_avg", "adaptive:sw_avg",
                                   "hindsight"], window=500),
                    interval=500, window=500, online_stable=online)
    doc = result.document("t")
    assert doc["cadence"]["window"] == doc["cadence"]["forecast:sw_avg"] == 500
    assert doc["cadence"]["adaptive:sw_avg"] == 125
    for state in ("all", "stable"):
        assert "adaptive:sw_avg" not in doc["gap_closed"][state]
    assert "forecast:sw_avg" in doc["gap_closed"]["all"]


# -- the setting to pick -------------------------------------------------------------------------

def _moving_hot(steps=3000, experts=8, every=200):
    """A hot expert that moves every ``every`` steps: re-planning pays, at the right pace."""
    counts = np.full((1, steps, experts), 100, dtype=np.int64)
    counts[0, np.arange(steps), (np.arange(steps) // every) % experts] = 2000
    return _loads(counts)


def test_recommendation_picks_the_best_net_and_says_when_nothing_pays():
    loads = _moving_hot()
    grid = Grid(intervals=(200, 800), windows=(200, 800), redundant=(0, 4))
    cheap = TimeModel(expert_params=10**8, token_seconds=1e-3, stall_seconds=0.0)
    found = recommend(loads, Cluster(gpus=4), grid=grid, predictor="naive",
                      time_model=cheap, online_stable=np.ones((1, 3000), dtype=bool))
    doc = found.document("t")
    assert doc["pays"] and list(doc["recommendation"]) == list(RECOMMENDATION_KEYS)
    nets = [row["net_seconds_saved"] for row in doc["grid"]]
    assert doc["recommendation"]["net_seconds_saved"] == max(nets) > 0
    assert nets == sorted(nets, reverse=True)
    assert doc["recommendation"]["interval"] == 200  # the pace of the moves
    # redundant x interval x (2 windows, forecast, adaptive)
    assert len(doc["grid"]) == 2 * 2 * (2 + 1 + 1)
    assert doc["static"]["net_seconds_saved"] == 0.0
    costly = TimeModel(expert_params=10**8, token_seconds=1e-9, stall_seconds=100.0)
    none = recommend(loads, Cluster(gpus=4), grid=grid, predictor="naive",
                     time_model=costly, online_stable=np.ones((1, 3000), dtype=bool))
    assert not none.pays() and none.choice()["policy"] == "static"
    assert none.sentence().startswith("Re-planning does not pay")


def test_recommend_command_json_and_errors(tmp_path):
    sample = str(ROOT / "sample_traces" / "gpt3-125m-sim.parquet")
    out = tmp_path / "rec.json"
    proc = run_cli("plan", sample, "--gpus", "8", "--recommend", "--replan-interval", "2000",
                   "--load-window", "1000", "--redundant", "8", "--json-out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert set(doc["recommendation"]) == set(RECOMMENDATION_KEYS)
    assert doc["searched"]["intervals"] == [2000] and doc["searched"]["redundant"] == [8]
    assert {"moves", "move_seconds", "compute_seconds", "net_seconds_saved"} <= set(
        doc["grid"][0])
    assert doc["sentence"] in proc.stdout.replace("\n", " ") or "Re-plan" in proc.stdout
    bad = run_cli("plan", sample, "--gpus", "8", "--recommend", "-o", str(tmp_path / "p"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "--recommend searches settings" in bad.stderr
    bare = tmp_path / "bare.parquet"  # a trace that does not say its model's size
    write_trace(long_frame(np.tile(np.arange(10, 14), (1, 3000, 1))), bare,
                TraceMetadata(n_layers=1, n_experts=4))
    unknown = run_cli("plan", str(bare), "--gpus", "2", "--recommend")
    assert unknown.returncode == 2 and "--expert-params" in unknown.stderr
    assert unknown.stderr.count("\n") == 1


# -- vllm-ascend's expert map --------------------------------------------------------------------

def test_vllm_ascend_fixture_reads_as_its_loader_reads_it():
    """The map in vllm-ascend's own unit test (tests/ut/eplb/core/a2/expert_map.json: 8
    experts, 2 devices of 5 slots); its test expects device 1's expert map
    [-1, 1, 4, -1, 2, -1, 0, 3] (each expert's local slot, -1 where absent) and 2 redundant
    experts."""
    fixture = {"moe_layer_count": 1, "layer_list": [{
        "layer_id": 0, "device_count": 2,
        "device_list": [{"device_id": 0, "device_expert": [7, 2, 0, 3, 5]},
                        {"device_id": 1, "device_expert": [6, 1, 4, 7, 2]}]}]}
    phy2log = read_vllm_ascend_map(fixture, n_experts=8)
    assert phy2log.tolist() == [[7, 2, 0, 3, 5, 6, 1, 4, 7, 2]]
    device = phy2log[0].reshape(2, 5)[1]
    expert_map = np.full(8, -1)
    expert_map[device] = np.arange(5)
    assert expert_map.tolist() == [-1, 1, 4, -1, 2, -1, 0, 3]
    assert phy2log.shape[1] - 8 == 2  # the redundant experts the loader counts
    assert vllm_ascend_map(phy2log, 2) == fixture


def test_plan_writes_a_vllm_ascend_map_that_round_trips(tmp_path):
    sample = str(ROOT / "sample_traces" / "gpt3-125m-sim.parquet")
    out, ascend = tmp_path / "plan.json", tmp_path / "ascend.json"
    proc = run_cli("plan", sample, "--gpus", "8", "--redundant", "8", "--estimate", "window",
                   "-o", str(out), "--vllm-ascend", str(ascend))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(out.read_text())
    doc = json.loads(ascend.read_text())
    assert doc["moe_layer_count"] == 6 and len(doc["layer_list"]) == 6
    assert all(len(layer["device_list"]) == layer["device_count"] == 8
               for layer in doc["layer_list"])
    assert read_vllm_ascend_map(ascend, n_experts=16).tolist() == plan["phy2log"]
    broken = dict(doc, layer_list=doc["layer_list"][:3])
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(ParameterError, match="broken.json: not a vllm-ascend expert map"):
        read_vllm_ascend_map(tmp_path / "broken.json", n_experts=16)


# -- the imbalance presets (Megatron-LM's W6 and W7) ---------------------------------------------

def test_rotating_hotspot_and_burst_presets():
    w6 = make_config("hotspot", steps=24)
    counts, truth = simulate_counts(w6, seed=1)
    shares = counts[0] / counts[0].sum(axis=1, keepdims=True)
    hot = shares[:, :8].sum(axis=1)  # the first hot set: experts 0-7 (a quarter of 32)
    assert (hot[:3] > 0.75).all() and (hot[3:12] < 0.25).all() and (hot[12:15] > 0.75).all()
    assert truth.stable_mask(24).all()  # no transient: the pattern is the imbalance
    w7 = make_config("burst", steps=16)
    counts, _ = simulate_counts(w7, seed=1)
    hot = counts[0][:, :8].sum(axis=1) / counts[0].sum(axis=1)
    burst = np.arange(16) % 4 == 3
    assert (hot[burst] > 0.5).all() and (hot[~burst] < 0.4).all()
    with pytest.raises(ParameterError, match="burst_length 5 exceeds burst_every 4"):
        make_config("burst", burst_length=5)


def test_plan_from_hindsight_and_window_samples():
    loads = _sim(steps=1500)
    for source in ("window", "hindsight"):
        plan = plan_trace(loads, Cluster(gpus=4, redundant=4), source=source, at=999,
                          interval=500, window=500)
        assert plan.source == source
        assert (plan.expected > 0).all()


def test_seconds_read_as_people_write_them():
    from moetrace.display import format_seconds

    assert [format_seconds(x) for x in (-0.00099998, 0.99996, 12.34, 3e-7, 0.0, None)] == \
        ["-1.0 ms", "1.0 s", "12.3 s", "300.0 ns", "0 s", "-"]
