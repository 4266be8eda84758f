"""Edges a new user hits (issue 24): one rule for short traces, traces with one expert, outputs
named twice, the forecast table's format, tables at 80 columns, and no library warning on a
user's terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import long_frame, names

from moetrace.simulate import simulate_trace
from moetrace.trace import TraceMetadata, write_trace

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = str(ROOT / "sample_traces" / "gpt3-125m-sim.parquet")


def moetrace(*args: str, columns: int = 120, warnings_as_errors: bool = False,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI as `python [-W error] -m moetrace ...` in a terminal of ``columns``."""
    flags = ["-W", "error"] if warnings_as_errors else []
    return subprocess.run([sys.executable, *flags, "-m", "moetrace", *args],
                          capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "COLUMNS": str(columns), "MPLBACKEND": "Agg"})


@pytest.fixture(scope="module")
def ten_steps(tmp_path_factory) -> Path:
    return simulate_trace(tmp_path_factory.mktemp("short") / "t10.parquet", preset="gpt3-125m",
                          steps=10, layers=2)


@pytest.fixture(scope="module")
def one_expert(tmp_path_factory) -> Path:
    counts = np.full((2, 1000, 1), 1000, dtype=np.int64)
    path = tmp_path_factory.mktemp("one") / "one.parquet"
    write_trace(long_frame(counts), path, TraceMetadata())
    return path


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("moetrace: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("args", [
    ["analyze"], ["predict"], ["report", "-o", "{out}"], ["plan", "--gpus", "4"],
    ["replay", "--gpus", "4"],
])
def test_a_10_step_trace_is_refused_by_every_command_in_the_same_words(ten_steps, tmp_path,
                                                                      args):
    args = [a.format(out=tmp_path / "rep") for a in args]
    line = _one_error_line(moetrace(args[0], str(ten_steps), *args[1:]))
    assert "the trace covers 10 training steps" in line
    assert "needs at least 40 (4 state windows of 10 samples)" in line
    assert names(tmp_path) == []


def test_a_short_trace_still_gets_shrunk_defaults_with_notes(tmp_path):
    trace = simulate_trace(tmp_path / "t.parquet", preset="gpt3-125m", steps=400, layers=1)
    result = moetrace("report", str(trace), "-o", str(tmp_path / "r"), "--predictors", "naive",
                      "--no-placement", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    fitted = doc["parameters"]
    assert fitted["state_window"] == 100 and fitted["min_history"] == 200
    assert fitted["horizons"] == [100, 200]  # never below one state window
    assert any("horizons of 100, 200 steps were used" in n for n in fitted["shrunk"])


@pytest.mark.parametrize("command,extra", [
    ("predict", []), ("report", ["-o", "{out}"]), ("plan", ["--gpus", "1"]),
    ("replay", ["--gpus", "1"]),
])
def test_one_expert_per_layer_has_nothing_to_forecast_or_place(one_expert, tmp_path, command,
                                                               extra):
    extra = [a.format(out=tmp_path / "rep") for a in extra]
    line = _one_error_line(moetrace(command, str(one_expert), *extra, warnings_as_errors=True))
    assert "1 expert per layer: there is nothing to" in line and str(one_expert) in line
    assert names(tmp_path) == []


@pytest.mark.parametrize("command", ["info", "analyze"])
def test_one_expert_per_layer_is_still_described(one_expert, command):
    result = moetrace(command, str(one_expert), "--json", warnings_as_errors=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    json.loads(result.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["info", SAMPLE], ["analyze", SAMPLE], ["predict", SAMPLE, "--horizon", "500"],
    ["report", SAMPLE, "-o", "{out}", "--predictors", "naive,sw_avg,auto"],
    ["plan", SAMPLE, "--gpus", "4"], ["replay", SAMPLE, "--gpus", "4"],
])
def test_no_library_warning_reaches_the_terminal(tmp_path, args):
    """Run under -W error: a warning anywhere (numpy, matplotlib, scipy) fails the command."""
    args = [a.format(out=tmp_path / "rep") for a in args]
    result = moetrace(*args, warnings_as_errors=True)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr


def test_two_outputs_with_one_name_are_refused_before_anything_is_written(tmp_path):
    same = tmp_path / "fa.parquet"
    line = _one_error_line(moetrace("predict", SAMPLE, "--horizon", "100", "-o", str(same),
                                    "--force", "--json-out", str(same)))
    assert "is named twice" in line and not same.exists()
    same = tmp_path / "same.json"
    line = _one_error_line(moetrace("plan", SAMPLE, "--gpus", "2", "-o", str(same),
                                    "--sglang", str(same)))
    assert "is named twice" in line
    assert names(tmp_path) == []


def test_an_output_inside_another_outputs_directory_is_refused(tmp_path):
    line = _one_error_line(moetrace("analyze", SAMPLE, "--out", str(tmp_path / "d"),
                                    "--json-out", str(tmp_path / "d" / "a.json")))
    assert "one inside the other's directory" in line
    assert names(tmp_path) == []


def test_plan_writes_its_files_together_or_not_at_all(tmp_path):
    (tmp_path / "sglang.json").write_text("mine")
    result = moetrace("plan", SAMPLE, "--gpus", "2", "-o", str(tmp_path / "plan.json"),
                      "--sglang", str(tmp_path / "sglang.json"))
    assert "exists already" in _one_error_line(result)
    assert names(tmp_path) == ["sglang.json"] and (tmp_path / "sglang.json").read_text() == "mine"


def test_the_forecast_table_is_csv_or_parquet_as_its_name_says(tmp_path):
    for name, read in (("f.csv", pl.read_csv), ("f.parquet", pl.read_parquet)):
        result = moetrace("predict", SAMPLE, "--horizon", "50", "--predictors", "naive",
                          "-o", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        table = read(tmp_path / name)
        assert table.columns[:6] == ["predictor", "origin", "step", "layer", "expert", "share"]
        assert table.height == 50 * 6 * 16
    line = _one_error_line(moetrace("predict", SAMPLE, "-o", str(tmp_path / "f.txt")))
    assert "name it *.parquet or *.csv" in line
    assert not (tmp_path / "f.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ["replay", SAMPLE, "--gpus", "4", "--redundant", "4", "--expert-params", "10000000",
     "--policies", "static,window,forecast:arima,adaptive,oracle"],
    ["analyze", str(ROOT / "sample_traces" / "gpt3-350m-sim.parquet")],
    ["plan", SAMPLE, "--gpus", "4"], ["info", SAMPLE],
])
def test_tables_fit_80_columns_and_never_cut_a_number(args):
    result = moetrace(*args, columns=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert "…" not in result.stdout


def test_moetrace_backtest_is_callable_whatever_was_imported_before():
    """README's `moetrace.backtest(loads, ...)` works after `moetrace.backtest` the module was
    imported (Python then binds the package attribute to the module)."""
    import subprocess
    import sys

    code = ("import moetrace.backtest, moetrace\n"
            "from moetrace.simulate import make_config, simulate_counts\n"
            "import numpy as np\n"
            "config = make_config('gpt3-125m', steps=600, layers=1)\n"
            "counts, _ = simulate_counts(config, 0)\n"
            "loads = moetrace.Loads(np.arange(600), counts, (0,))\n"
            "result = moetrace.backtest(loads, ['naive'], [100], min_history=200)\n"
            "from moetrace import backtest\n"
            "assert backtest(loads, ['naive'], [100], min_history=200).summary().height > 0\n"
            "print(type(result).__name__)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "BacktestResult"
