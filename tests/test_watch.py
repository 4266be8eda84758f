"""watch: following a real recording while it is written, merging ranks, writing plans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from moetrace.errors import ParameterError
from moetrace.placement import Cluster, read_plan, replay, replica_counts
from moetrace.placement.document import PLAN_KEYS
from moetrace.placement.plan import plan_trace
from moetrace.states import analyze_loads
from moetrace.trace import read_trace
from moetrace.trace.shares import Loads
from moetrace.watch import Merger, PlanSettings, WatchState, watch
from moetrace.watch.follow import Part

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_traces" / "demo-sampled"


def _part(rank, steps, counts, world=2):
    steps = np.asarray(steps)
    return Part(rank, 0, Path(f"rank={rank}/part.parquet"), steps, np.asarray(counts),
                world, 1)


def test_parts_of_two_ranks_arriving_out_of_order_merge_once_in_order():
    merger = Merger(stall_steps=100)
    c = lambda v, n: np.full((1, n, 2), v)  # noqa: E731
    merged, _ = merger.add([_part(1, [0, 1, 2, 3], c(1, 4))])  # rank 1 first: wait for 0
    assert merged is None
    merged, _ = merger.add([_part(0, [0, 1], c(10, 2))])
    assert merged[0].tolist() == [0, 1] and merged[1][0, :, 0].tolist() == [11, 11]
    merged, _ = merger.add([_part(0, [2, 3, 4, 5], c(10, 4))])
    assert merged[0].tolist() == [2, 3]  # 4 and 5 wait for rank 1
    merged, _ = merger.add([_part(1, [4, 5], c(1, 2))])
    assert merged[0].tolist() == [4, 5] and merged[1].sum() == 2 * 2 * 11


def test_a_rank_that_stops_is_reported_and_not_waited_for():
    merger = Merger(stall_steps=10)
    c = lambda n: np.ones((1, n, 2), dtype=np.int64)  # noqa: E731
    merger.add([_part(0, range(0, 5), c(5)), _part(1, range(0, 5), c(5))])
    merged, events = merger.add([_part(0, range(5, 30), c(25))])
    assert any("rank 1 stalled" in e for e in events)
    assert merged[0].tolist() == list(range(5, 30))
    merged, events = merger.add([_part(1, range(5, 10), c(5))])  # too late: reported
    assert merged is None and any("arrived after they were merged" in e for e in events)


def test_watch_over_a_finished_recording_agrees_with_analyze():
    snapshots = []
    result = watch(SAMPLE, on_update=lambda snap, ev: snapshots.append(snap), until_idle=0,
                   poll=0.01)
    trace = read_trace(SAMPLE)
    analysis = analyze_loads(trace.loads(), top_k=trace.metadata.top_k)
    assert result.state.last_step == int(trace.steps[-1])
    for layer, la in zip(snapshots[-1]["layers"], analysis.layers):
        assert layer["state"] == ("stable" if la.online_stable_from is not None else "transient")
        assert layer["since"] == (la.online_stable_from if la.online_stable_from is not None
                                  else layer["since"])
    assert np.array_equal(result.state.stable, analysis.online_stable[:, -1])


def test_bad_files_are_reported_once_and_skipped(tmp_path):
    import shutil

    shutil.copytree(SAMPLE, tmp_path / "run")
    (tmp_path / "run" / "rank=0" / "part-000009.parquet").write_bytes(b"not parquet")
    (tmp_path / "run" / "rank=0" / ".part-000010.parquet.moetrace-1@x.tmp").write_bytes(b"x")
    problems = []
    result = watch(tmp_path / "run", on_update=lambda s, e: None, on_problem=problems.append,
                   until_idle=0.3, poll=0.05)
    assert len(problems) == 1 and "part-000009.parquet" in problems[0]
    assert result.state.last_step == 1990


@pytest.mark.slow
def test_watch_follows_the_demo_trainer_live_and_writes_plans(tmp_path):
    """The demo trainer records in a subprocess (a part every 20 steps) while watch follows
    it; then the trainer is killed mid-run and watch ends on the last complete step."""
    run, plan = tmp_path / "run", tmp_path / "plan.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the demo trainer recording straight into run/ (as a user's job does with TraceRecorder;
    # `record --demo -o DIR` would publish DIR only when complete)
    script = ("import sys, torch; from pathlib import Path\n"
              "from moetrace.record.demo import DemoConfig, _train\n"
              "torch.set_num_threads(1)\n"
              "_train(Path(sys.argv[1]), 4000, 0, DemoConfig(), 3e-3, 20, None, None)\n")
    trainer = subprocess.Popen([sys.executable, "-c", script, str(run)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                               start_new_session=True)
    watcher = subprocess.Popen([sys.executable, "-m", "moetrace", "watch", str(run), "--json",
                                "--until-idle", "45", "--poll", "0.2", "--gpus", "4",
                                "--redundant", "4", "--interval", "100", "--threshold",
                                "0.01", "--plan-out", str(plan)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # let it train a while, then kill it mid-run
        parts = list((run / "rank=0").glob("part-*.parquet")) if run.exists() else []
        if len(parts) >= 8:
            break
        time.sleep(0.5)
    os.killpg(trainer.pid, signal.SIGKILL)
    trainer.wait()
    out, err = watcher.communicate(timeout=120)
    assert watcher.returncode == 0, err
    updates = [json.loads(line) for line in out.splitlines()]
    steps = [u["step"] for u in updates]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    final = read_trace(run)  # what the killed trainer left: complete parts only
    assert updates[-1]["step"] == int(final.steps[-1])
    assert updates[-1]["steps_seen"] == final.n_steps  # every flushed step, exactly once
    assert {layer["state"] for layer in updates[-1]["layers"]} <= {"stable", "transient"}
    events = [e for u in updates for e in u["events"]]
    assert any(e["event"] == "replan" for e in events)
    doc = json.loads(plan.read_text())
    assert doc["plan_version"] == max(e["version"] for e in events if e["event"] == "replan")
    phy2log = np.array(doc["phy2log"])
    assert phy2log.shape == (4, 12) and (phy2log >= 0).all()
    assert all(set(row) == set(range(8)) for row in phy2log.tolist())
    assert "watched" in err and "until-idle" in err


# -- plans: the adaptive policy's own rule, the one plan document ------------------------------

def _sim_loads(layers=2, steps=5000):
    trace = read_trace(ROOT / "sample_traces" / "gpt3-125m-sim.parquet")
    loads = trace.loads()
    return Loads(loads.steps[:steps], loads.counts[:layers, :steps], loads.layers[:layers]), \
        trace.metadata.top_k


def _watch_in_quarters(loads, top_k, settings, quarter):
    """A WatchState fed the first re-plan interval, then one quarter interval at a time: its
    checks fall on the adaptive policy's origins (the last step, which the replay does not
    re-plan at, is left out)."""
    state = WatchState(loads.n_layers, loads.n_experts, top_k=top_k, plan=settings,
                       horizon=settings.replan_interval)
    start = int(loads.steps[0]) + settings.replan_interval - loads.interval
    events = []
    for a, b in zip([int(loads.steps[0]) - 1, *range(start, int(loads.steps[-1]), quarter)],
                    [*range(start, int(loads.steps[-1]), quarter), int(loads.steps[-2])]):
        rows = loads.rows(a, b)
        events += state.update(loads.steps[rows], loads.counts[:, rows])
    return state, [e for e in events if e["event"] == "replan"]


def test_watch_applies_the_adaptive_policys_own_rule():
    """Fed a trace a quarter interval at a time, watch re-plans the very layers at the very
    steps the replay's adaptive policy does (transient layers every quarter interval from
    their last quarter of counts, stable ones on the grid when the forecast gains), and ends
    with the same plan."""
    loads, top_k = _sim_loads()
    cluster = Cluster(gpus=4, redundant=4)
    settings = PlanSettings(cluster, replan_interval=1000, predictor="naive")
    state, replans = _watch_in_quarters(loads, top_k, settings, quarter=250)
    analysis = analyze_loads(loads, top_k=top_k)
    result = replay(loads, cluster, [settings.policy], interval=1000,
                    online_stable=analysis.online_stable)
    adaptive = result.policies[0]
    assert [(e["at"], e["layers"]) for e in replans] == \
        [(t, np.flatnonzero(which).tolist()) for t, which in adaptive.replans]
    assert any(not analysis.online_stable[:, loads.index(t) - 1].all()
               for t, _ in adaptive.replans[1:])  # the transient branch is exercised
    assert np.array_equal(state.current, adaptive.final)
    assert state.replicas_moved == sum(int(m.sum()) for m in adaptive.moved)


def test_watch_and_plan_write_one_plan_document(tmp_path):
    """Both writers give the keys docs/placement.md lists; watch's arrays are the plan in
    force, log2phy the inverse of phy2log; both read back."""
    loads, top_k = _sim_loads(steps=3000)
    cluster = Cluster(gpus=4, redundant=4)
    planned = plan_trace(loads, cluster, source="window").document("trace.parquet")
    settings = PlanSettings(cluster, replan_interval=1000, predictor="naive")
    state = WatchState(loads.n_layers, loads.n_experts, top_k=top_k, plan=settings,
                       horizon=1000)
    state.update(loads.steps[:1000], loads.counts[:, :1000])  # the first plan
    first = state.pending_plan
    watched = first.document("run/", plan_version=state.plan_version)
    documented = _documented_plan_keys()
    assert documented == list(PLAN_KEYS)
    for doc in (planned, watched):
        assert _keys(doc) == set(documented)
        back = read_plan(doc)
        assert back.plan.phy2log.tolist() == doc["phy2log"]
    assert watched["plan_version"] == 1 and planned["plan_version"] is None
    # the arrays are the plan in force, and log2phy lists exactly the slots of each expert
    phy2log, log2phy = np.array(watched["phy2log"]), np.array(watched["log2phy"])
    assert np.array_equal(replica_counts(phy2log, loads.n_experts, 4), state.current)
    for layer in range(loads.n_layers):
        for expert in range(loads.n_experts):
            listed = log2phy[layer, expert][log2phy[layer, expert] >= 0]
            assert sorted(listed) == np.flatnonzero(phy2log[layer] == expert).tolist()
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(watched))
    assert read_plan(path).plan_version == 1
    path.write_text(json.dumps({**watched, "phy2log": watched["phy2log"][:1]}))
    with pytest.raises(ParameterError, match="plan.json: not a moetrace.plan"):
        read_plan(path)


def _keys(doc):
    keys = set(doc)
    keys |= {f"cluster.{k}" for k in doc["cluster"]}
    keys |= {f"expected[].{k}" for entry in doc["expected"] for k in entry}
    return keys


def _documented_plan_keys():
    """The first column of the table under "The plan document" in docs/placement.md."""
    text = (ROOT / "docs" / "placement.md").read_text()
    section = text.split("### The plan document", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [row.split("`")[1] for row in rows]


# -- the command ------------------------------------------------------------------------------

def test_watch_json_out_writes_a_summary_and_the_last_update(tmp_path):
    out, plan = tmp_path / "watch.json", tmp_path / "plan.json"
    proc = run_cli("watch", str(SAMPLE), "--gpus", "4", "--redundant", "4", "--interval",
                   "500", "--until-idle", "0", "--poll", "0.01", "--json-out", str(out),
                   "--plan-out", str(plan))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "moetrace.watch" and doc["version"] == 1
    assert doc["reason"] == "until-idle" and doc["updates"] == 1 and doc["problems"] == []
    last = doc["last_update"]
    assert last["step"] == 1990 and last["plan_version"] == 1
    assert [e["event"] for e in last["events"]].count("replan") == 1
    assert doc["summary"].startswith("watched 1 update(s), up to step 1,990; plan version 1")
    assert read_plan(plan).plan_version == 1


def test_watch_outputs_are_checked_before_any_work(tmp_path):
    same = tmp_path / "same.json"
    proc = run_cli("watch", str(SAMPLE), "--gpus", "4", "--until-idle", "0", "--json-out",
                   str(same), "--plan-out", str(same))
    assert proc.returncode == 2 and "is named twice" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not same.exists()
    same.write_text("mine")
    proc = run_cli("watch", str(SAMPLE), "--until-idle", "0", "--json-out", str(same))
    assert proc.returncode == 2 and "exists" in proc.stderr and same.read_text() == "mine"
    inside = SAMPLE / "watch.json"
    proc = run_cli("watch", str(SAMPLE), "--until-idle", "0", "--json-out", str(inside))
    assert proc.returncode == 2 and not inside.exists()


def test_watch_interval_sets_the_forecast_horizon_without_gpus(tmp_path):
    """The demo recording spans 2,000 steps: a 4,000-step interval leaves too little history
    to forecast (before, --interval was ignored without --gpus and 1,000 steps were used)."""
    runs = {}
    for interval in ("1000", "4000"):
        out = tmp_path / f"watch-{interval}.json"
        proc = run_cli("watch", str(SAMPLE), "--interval", interval, "--until-idle", "0",
                       "--json-out", str(out))
        assert proc.returncode == 0, proc.stderr
        runs[interval] = json.loads(out.read_text())["last_update"]
    assert runs["1000"]["forecast_at"] == 1990
    assert runs["4000"]["forecast_at"] is None
