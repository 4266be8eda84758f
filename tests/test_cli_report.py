"""`moetrace report` through click's CliRunner and through the installed entry point."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli
from report_data import FAST_ARGS, small_trace
from click.testing import CliRunner

from moetrace.cli import app


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return small_trace(tmp_path_factory.mktemp("trace"))


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "120"})


def test_report_writes_directory_and_prints_summary(trace, tmp_path):
    out = tmp_path / "rep"
    result = invoke("report", trace, "-o", out, "--predictors", "naive,sw_avg", *FAST_ARGS,
                    "--window", "50")
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "report.json").read_text())
    # the first screen answers first: the headline, then the bottom line with every predictor
    words = result.output.split()
    assert " ".join(words[:len(doc["headline"].split())]) == doc["headline"]
    assert "Bottom line: each predictor against the best" in result.output
    assert "naive" in result.output and "sw_avg" in result.output
    assert f"report written to {out}" in result.output
    assert doc["parameters"]["window"] == 50
    command = doc["parameters"]["command"]
    assert command.startswith(f"moetrace report {trace} -o {out} --horizon 100,200 ")
    assert "--predictors naive,sw_avg" in command and "--sw-window 50" in command


@pytest.mark.parametrize("args, message", [
    (["--horizons", "0"], "--horizon takes positive integers"),
    (["--horizon", "0"], "--horizon takes positive integers"),
    (["--stride", "100", "--origins", "3"], "either --stride or --origins"),
    (["--predictors", "naive,crystal_ball"], "unknown predictor 'crystal_ball'"),
    (["--min-history", "100000"], "needs at least 100,000 steps of history"),
    (["--no-placement", "--gpus", "4"], "--no-placement leaves out the section"),
    (["--gpus", "3"], "8 experts do not split evenly over 3 GPUs"),
    (["--gpus", "4", "--redundant", "3"], "11 replica slots do not split evenly over 4 GPUs"),
])
def test_bad_options_exit_2_in_one_line(trace, tmp_path, args, message):
    result = invoke("report", trace, "-o", tmp_path / "rep", "--predictors", "naive",
                    "--horizons", "100", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "rep").exists()


def test_existing_directory_needs_force_through_entry_point(trace, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    refused = run_cli("report", str(trace), "-o", str(out), "--predictors", "naive", *FAST_ARGS)
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"moetrace: error: {out}: exists already; pass --force to " \
                                     "replace it"
    done = run_cli("report", str(trace), "-o", str(out), "--predictors", "naive", *FAST_ARGS,
                   "--force")
    assert done.returncode == 0, done.stderr
    assert (out / "report.html").exists() and (out / "figures").is_dir()


def test_missing_trace_exits_2(tmp_path):
    result = invoke("report", tmp_path / "nope.parquet", "-o", tmp_path / "rep",
                    "--predictors", "naive")
    assert result.exit_code == 2
    assert "no such file" in result.output
