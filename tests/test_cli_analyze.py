"""`moetrace analyze`: table and verdict, --json schema, --out files, errors, entry point."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from conftest import run_cli
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.simulate import simulate_trace
from moetrace.trace import read_trace

ENV = {"COLUMNS": "120"}


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    """A 125M-style simulated trace: 3 layers, 1,500 steps, known boundaries."""
    path = tmp_path_factory.mktemp("analyze") / "t.parquet"
    return simulate_trace(path, preset="gpt3-125m", steps=1500, layers=3, seed=1)


def test_table_and_verdict(trace):
    result = CliRunner().invoke(app, ["analyze", str(trace)], env=ENV)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "noise" in out and "max/mean" in out and "segments" in out
    assert "verdict: stable from step" in out and "in all layers" in out
    truth = read_trace(trace).metadata.extra["true_boundaries"]
    for layer, true in enumerate(truth):
        row = re.search(rf"^\s*{layer}\s+(\d+)\s+(\d+) \(\+(\d+)\).*T0 S(\d+)", out, re.M)
        assert row is not None, out
        assert row.group(1) == row.group(4) and abs(int(row.group(1)) - true) <= 75
        called = int(row.group(1)) + int(row.group(3))
        assert true <= called <= true + 1000  # online: after the boundary, within 1,000 steps


def test_json_has_the_documented_schema(trace, tmp_path):
    path = tmp_path / "a.json"
    result = CliRunner().invoke(app, ["analyze", str(trace), "--json-out", str(path), "--window",
                                      "50"], env=ENV)
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert data["schema"] == "moetrace.analysis" and data["schema_version"] == 2
    assert data["parameters"]["window"] == 50
    assert data["steps"] == {"first": 0, "last": 1499, "count": 1500, "interval": 1}
    truth = read_trace(trace).metadata.extra["true_boundaries"]
    assert [la["layer"] for la in data["layers"]] == [0, 1, 2]
    for la, true in zip(data["layers"], truth):
        assert abs(la["stable_from"] - true) <= 75
        segs = la["segments"]
        assert segs[0]["start"] == 0 and segs[-1]["end"] == 1500
        assert all(a["end"] == b["start"] for a, b in zip(segs, segs[1:]))
        assert {s["state"] for s in segs} <= {"transient", "stable"}
        assert segs[-1]["start"] == la["stable_from"]
        floor = la["noise_floor"]["stable"]
        assert 0 < floor["value"] <= floor["multinomial"] * 1.0001
        assert set(la["fluctuation"]) == set(la["imbalance"]) == {"transient", "stable", "all"}
        online = la["online"]
        assert online["delay"] == online["detected_at"] - la["stable_from"]
        assert online["calls"][-1] == {"at": online["detected_at"],
                                       "onset": online["stable_from"], "state": "stable"}
        assert 0 <= online["confidence"] <= 1
    assert data["model"]["stable_from"] == max(la["stable_from"] for la in data["layers"])
    assert data["model"]["verdict"].startswith("stable from step")


def test_out_dir_holds_tables_and_figures(trace, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", str(trace), "--out", str(out)], env=ENV)
    assert result.exit_code == 0, result.output
    states = pl.read_parquet(out / "states.parquet")
    assert states.height == 3 * 1500
    assert {"layer", "step", "state", "stable", "max_mean", "noise_floor"} <= set(states.columns)
    windows = pl.read_parquet(out / "windows.parquet")
    assert windows.height == 3 * (1500 - 100 + 1)
    assert {"centre_step", "var_mean", "var_max", "range_mean", "range_max"} <= \
        set(windows.columns)
    for layer in range(3):
        png = out / "figures" / f"layer_{layer}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # states.parquet agrees with the segments
    first_stable = states.filter(pl.col("layer") == 0, pl.col("stable")).get_column("step").min()
    again = CliRunner().invoke(app, ["analyze", str(trace), "--json"], env=ENV)
    assert again.exit_code == 0
    assert json.loads(again.stdout)["layers"][0]["stable_from"] == first_stable


def test_existing_out_dir_needs_force(trace, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["analyze", str(trace), "--out", str(out)], env=ENV)
    assert result.exit_code == 2
    assert "--force" in result.output
    forced = CliRunner().invoke(app, ["analyze", str(trace), "--out", str(out), "--force"],
                                env=ENV)
    assert forced.exit_code == 2 and "did not write" in forced.output  # a user's folder
    assert (out / "keep.txt").read_text() == "mine"
    ours = tmp_path / "ours"
    assert CliRunner().invoke(app, ["analyze", str(trace), "--out", str(ours)]).exit_code == 0
    (ours / "stale.txt").write_text("x")
    again = CliRunner().invoke(app, ["analyze", str(trace), "--out", str(ours), "--force"],
                               env=ENV)
    assert again.exit_code == 0
    assert not (ours / "stale.txt").exists() and (ours / "states.parquet").exists()


@pytest.mark.parametrize("args,message", [
    # the one rule for short traces (moetrace/pipeline/span.py): four state windows of at
    # least ten samples each
    (["--state-window", "5000"], "fewer than 4 state windows of 5,000 steps"),
    (["--state-window", "1"], "--state-window 1 holds fewer than 10 samples"),
    (["--sensitivity", "0"], "--sensitivity must be positive"),
    (["--stable-ratio", "0.5"], "--stable-ratio must be above 1"),
])
def test_bad_options_exit_2_in_one_line(trace, tmp_path, args, message):
    json_path = tmp_path / "a.json"
    result = CliRunner().invoke(app, ["analyze", str(trace), "--json-out", str(json_path),
                                      *args], env=ENV)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not json_path.exists()


def test_entry_point_prints_table_and_fails_cleanly(trace, tmp_path):
    result = run_cli("analyze", str(trace))
    assert result.returncode == 0, result.stderr
    assert "verdict: stable from step" in result.stdout
    missing = run_cli("analyze", str(tmp_path / "nope.parquet"))
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0
    assert "no such file" in missing.stderr


def test_help_explains_the_parameters():
    result = CliRunner().invoke(app, ["analyze", "--help"], env=ENV)
    assert "transient and stable" in result.output
    for option in ("--state-window", "--sensitivity", "--stable-ratio", "--json", "--json-out",
                   "--out", "--force"):
        assert option in result.output
