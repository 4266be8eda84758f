"""Every writer killed with SIGKILL at random moments: the output path holds the previous
complete output or the new complete one, never a partial one (docs/cli.md, "Outputs")."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import polars as pl
import pytest
from conftest import MOETRACE

from moetrace.simulate import simulate_trace
from moetrace.trace import read_trace

RUNS = 3
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return simulate_trace(tmp_path_factory.mktemp("kill") / "t.parquet", preset="gpt3-125m",
                          steps=1500, layers=2, seed=4)


def _run(args, kill_after=None):
    """Run the entry point; SIGKILL it after ``kill_after`` seconds if it is still running."""
    proc = subprocess.Popen([str(MOETRACE), *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    if kill_after is None:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()[-2000:]
        return
    time.sleep(kill_after)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    return killed


def _timed(args) -> float:
    start = time.perf_counter()
    _run(args)
    return time.perf_counter() - start


def _kill_loop(old_args, new_args, check, seed):
    """Write the old output, then kill the new write at random moments; ``check`` says which
    complete output is at the path (or fails)."""
    _run(old_args)
    assert check() == "old"
    duration = _timed(new_args + ["--force"])  # the new one, complete, and how long it takes
    assert check() == "new"
    _run(old_args + ["--force"])
    rng = random.Random(seed)
    seen, kills = set(), 0
    for _ in range(RUNS):
        kills += _run(new_args + ["--force"], kill_after=rng.uniform(0.05, duration))
        seen.add(check())  # raises if the path holds anything but a complete output
    assert kills, "no run was killed before it finished: the test proved nothing"
    return seen


def test_record_simulate(tmp_path):
    out = tmp_path / "sim.parquet"

    def check():
        return {600: "old", 900: "new"}[read_trace(out).n_steps]

    base = ["record", "--simulate", "gpt3-125m", "--layers", "2", "-o", out]
    assert _kill_loop(base + ["--steps", "600"], base + ["--steps", "900"], check, 1)


def test_predict(trace, tmp_path):
    out = tmp_path / "f.parquet"

    def check():
        return {100: "old", 300: "new"}[pl.read_parquet(out)["step"].n_unique()]

    base = ["predict", trace, "--predictors", "naive,arima", "-o", out]
    assert _kill_loop(base + ["--horizon", "100"], base + ["--horizon", "300"], check, 2)


def test_analyze_out(trace, tmp_path):
    out = tmp_path / "analysis"

    def check():
        windows = pl.read_parquet(out / "windows.parquet").height
        assert pl.read_parquet(out / "states.parquet").height == 2 * 1500
        assert all((out / "figures" / f"layer_{i}.png").stat().st_size > 0 for i in (0, 1))
        return {2 * (1500 - 50 + 1): "old", 2 * (1500 - 200 + 1): "new"}[windows]

    base = ["analyze", trace, "--out", out]
    assert _kill_loop(base + ["--window", "50"], base + ["--window", "200"], check, 3)


def test_report(trace, tmp_path):
    out = tmp_path / "report"

    def check():
        doc = json.loads((out / "report.json").read_text())
        assert (out / "report.html").stat().st_size > 0 and (out / "report.md").exists()
        assert all((out / f["file"]).exists() for f in doc["figures"])
        return {(100,): "old", (200,): "new"}[tuple(doc["parameters"]["horizons"])]

    base = ["report", trace, "-o", out, "--predictors", "naive,sw_avg,arima", "--origins", "4"]
    assert _kill_loop(base + ["--horizon", "100"], base + ["--horizon", "200"], check, 4)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.")]
    _run(base + ["--horizon", "200", "--force"])  # the next writer cleans dead ones' leftovers
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.")] == [], leftovers
