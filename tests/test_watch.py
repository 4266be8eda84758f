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

from moetrace.states import analyze_loads
from moetrace.trace import read_trace
from moetrace.watch import Merger, PlanSettings, watch
from moetrace.watch.follow import Part
from moetrace.placement import Cluster

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
