"""Placement's one set of load estimates, one expected balancedness, one adaptive rule: the
plan and the replay take the same shares from the same place, a forecast that cannot be made
falls back the same way in both, and policies travel to worker processes as they are."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from moetrace.errors import ParameterError
from moetrace.placement import Cluster, Estimates, expected_balancedness, make_policies, replay
from moetrace.placement.cluster import replica_counts
from moetrace.placement.plan import plan_trace
from moetrace.placement.policies import Adaptive, ReplayContext, Window, on_grid
from moetrace.trace.shares import Loads


def _loads(counts, steps=None):
    counts = np.asarray(counts, dtype=np.int64)
    steps = np.arange(counts.shape[1]) if steps is None else np.asarray(steps)
    return Loads(steps=steps, layers=tuple(range(counts.shape[0])), counts=counts)


def _random(layers=2, steps=30, experts=4, seed=0):
    return _loads(np.random.default_rng(seed).integers(1, 50, (layers, steps, experts)))


def test_the_window_estimate_is_the_same_shares_in_plan_and_replay():
    loads = _random(steps=20)
    # window of 5 steps before step 14: the steps 10..14, summed, as shares
    summed = loads.counts[:, 10:15].sum(axis=1)
    by_hand = summed / summed.sum(axis=1, keepdims=True)
    plan = plan_trace(loads, Cluster(gpus=2), source="window", at=14, window=5, interval=5)
    ctx = ReplayContext(Estimates(loads, 5), Cluster(gpus=2), np.array([14]), None)
    replan = Window(window=5).decide(ctx, 14, None)
    assert np.allclose(plan.shares, by_hand) and np.allclose(replan.shares, by_hand)
    assert replan.layers.all()
    # and the plan is made for those very steps, one by one
    assert np.array_equal(replan.samples, loads.counts[:, 10:15])


def test_a_window_without_tokens_is_equal_shares():
    counts = np.ones((1, 10, 4), dtype=np.int64)
    counts[0, 5:8] = 0
    estimates = Estimates(_loads(counts), 3)
    assert np.allclose(estimates.window(7, 3), 0.25)
    assert np.isfinite(estimates.window(7, 3)).all()  # the planner takes it as it is
    Cluster(gpus=2).plan(estimates.window(7, 3))


def test_a_forecast_that_cannot_be_made_falls_back_to_the_window_in_plan_and_replay():
    loads = _random(steps=30)  # drift needs 40 steps of history: it cannot forecast here
    plan = plan_trace(loads, Cluster(gpus=2), source="forecast", predictor="drift", at=29,
                      interval=10)
    assert plan.fallback.startswith("could not forecast at step 29 (drift")
    assert plan.fallback.endswith("the last 10 steps' counts stood in")
    window = loads.counts[:, 20:30].sum(axis=1)
    assert np.allclose(plan.shares, window / window.sum(axis=1, keepdims=True))
    # the replay: the same rule, so the forecast policy plans exactly as a window of the
    # last interval does, and says so
    policies = [Window(window=10, name="window"), *make_policies(["forecast:drift"])]
    result = replay(loads, Cluster(gpus=2), policies, interval=10, window=10, start=9)
    by_name = {p.name: p for p in result.policies}
    assert np.array_equal(by_name["window"].balancedness, by_name["forecast:drift"].balancedness)
    assert result.notes and all(n.startswith("drift could not forecast at step")
                                for n in result.notes)


def test_the_hindsight_estimate_needs_steps_after():
    estimates = Estimates(_random(steps=10), 5)
    assert np.allclose(estimates.hindsight(4).sum(axis=1), 1)
    assert np.array_equal(estimates.oracle(4), estimates.hindsight(4))  # the former name
    with pytest.raises(ParameterError, match="needs the steps after 9"):
        estimates.hindsight(9)


def test_expected_balancedness_by_hand():
    shares = np.array([[0.4, 0.3, 0.2, 0.1]])
    static = Cluster(gpus=2).static(1, 4)  # GPU 0: experts 0, 1 (0.7); GPU 1: 2, 3 (0.3)
    split = np.array([[[1, 1], [1, 0], [0, 1], [0, 1]]])  # expert 0 on both: 0.5 and 0.5
    assert expected_balancedness(shares, static) == pytest.approx([0.5 / 0.7])
    assert expected_balancedness(shares, split) == pytest.approx([1.0])


def test_adaptive_looks_at_stable_layers_at_every_grid_point_though_a_quarter_is_no_divisor():
    """Sampled every 300 steps, a quarter of a 1,000-step re-plan interval is one sample (300
    steps), which does not divide 1,000: stable layers are looked at on the first re-plan
    step at or after each grid point (not only where 300 and 1,000 meet, every 3,000)."""
    n, experts = 40, 10
    counts = np.ones((1, n, experts), dtype=np.int64)
    counts[0, np.arange(n), 5 + np.arange(n) % 5] = 90  # a hot expert moving every sample
    loads = _loads(counts, steps=np.arange(n) * 300)
    online = np.ones((1, n), dtype=bool)
    # a gain threshold below any gain: every look re-plans, so the re-plans are the looks
    result = replay(loads, Cluster(gpus=2, redundant=2),
                    [Adaptive(predictor="naive", tolerance=-1.0)], interval=1000, start=900,
                    online_stable=online)
    replanned = [t - 900 for t, _ in result.policies[0].replans]
    assert replanned == [0, 1200, 2100, 3000, 4200, 5100, 6000, 7200, 8100, 9000, 10200]
    assert on_grid(1200, 900, 0, 1000) and not on_grid(900, 600, 0, 1000)


def test_policies_travel_to_worker_processes_as_they_are():
    from moetrace.scale.executor import Local

    policies = make_policies(["static", "window", "forecast:naive", "adaptive:naive",
                              "oracle"], window=10, predictor="naive")
    assert pickle.loads(pickle.dumps(policies)) == policies
    loads = [_random(steps=60, seed=s) for s in (1, 2)]
    online = np.ones((2, 60), dtype=bool)
    tasks = [(part, Cluster(gpus=2, redundant=2), policies, 10, None, 10, None, online)
             for part in loads]
    here = [replay(*task[:3], interval=10, window=10, online_stable=online) for task in tasks]
    there = Local(2).map(_replay, tasks)
    for a, b in zip(here, there):
        assert a.rows() == b.rows()


def _replay(loads, cluster, policies, interval, start, window, stable, online):
    return replay(loads, cluster, policies, interval=interval, start=start, window=window,
                  stable=stable, online_stable=online)


def test_planner_is_the_clusters_name_for_the_rebalance_algorithm():
    assert Cluster(gpus=2, rebalance="eplb") == Cluster(gpus=2, planner="eplb")
    assert Cluster(gpus=2, planner="eplb").rebalance == "eplb"  # the old name, read-only
    assert Cluster(gpus=2).planner == "balanced"
    with pytest.raises(ParameterError, match="unknown planner 'magic'"):
        Cluster(gpus=2, planner="magic").slots(4)


def test_a_relabelled_plan_keeps_the_planners_slot_order():
    rng = np.random.default_rng(3)
    cluster = Cluster(gpus=4, nodes=2, redundant=4)
    current = cluster.plan(rng.random((3, 16)))
    weight = rng.random((3, 16))
    fresh, moved = cluster.layout(weight), cluster.layout(weight, current)
    assert np.array_equal(replica_counts(moved.phy2log, 16, 4), moved.replicas)
    assert np.array_equal(moved.logcnt, fresh.logcnt)
    per_gpu = fresh.phy2log.reshape(3, 4, -1)
    for layer in range(3):  # each GPU's slots, in the planner's order, moved as a block
        blocks = {tuple(b) for b in per_gpu[layer]}
        assert {tuple(b) for b in moved.phy2log[layer].reshape(4, -1)} == blocks
        for expert in range(16):
            slots = moved.log2phy[layer, expert]
            assert (moved.phy2log[layer, slots[slots >= 0]] == expert).all()
            assert (slots >= 0).sum() == moved.logcnt[layer, expert]


def test_a_forecasts_samples_are_two_scenarios_of_the_recent_steps_by_hand():
    """The recent steps' variation around the forecast's level, then the steps as they were;
    a plan must win in the blocks of each (sample_blocks)."""
    from moetrace.placement.estimates import sample_blocks

    counts = np.array([[[3, 1], [1, 3], [2, 2], [3, 1]]])  # shares .75/.25, .25/.75, .5, .75
    estimates = Estimates(Loads(np.arange(4), counts, (0,)), replan_interval=2)
    samples = estimates.samples("forecast", 3, predictor="naive")  # naive: the last step
    # recent steps 2, 3 (mean .625/.375), deviations -/+.125 carried onto .75/.25
    np.testing.assert_allclose(samples[0], [[0.625, 0.375], [0.875, 0.125],
                                            [0.5, 0.5], [0.75, 0.25]])
    assert (sample_blocks("forecast"), sample_blocks("window"), sample_blocks("hindsight"),
            sample_blocks("oracle")) == (32, 16, 1, 1)


def test_adaptive_samples_put_a_transient_layers_short_window_in_each_scenario():
    from moetrace.placement.policies import _mixed

    forecast = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)  # 2 scenarios x 2
    short = np.full((2, 2, 3), -1.0, dtype=np.float32)
    short[:, 1] = -2.0
    mixed = _mixed(short, forecast, np.array([True, False]))
    np.testing.assert_array_equal(mixed[0, :, 0], [-1, -2, -1, -2])  # its blocks as alone
    np.testing.assert_array_equal(mixed[1], forecast[1])
