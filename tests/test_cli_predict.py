"""`moetrace predict`: the long forecast table, the summary, --at, every predictor through
the CLI, bad input as one line with exit 2 and nothing written."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import long_frame, run_cli
from predictor_data import random_walk
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.forecast import FORECAST_SCHEMA, forecast_loads
from moetrace.trace import TraceMetadata, write_trace

ENV = {"COLUMNS": "120"}


@pytest.fixture
def trace(tmp_path):
    """2 layers x 700 steps x 6 experts, steps numbered from 100."""
    loads = random_walk(n_layers=2, n_steps=700, n_experts=6, seed=1)
    path = tmp_path / "t.parquet"
    write_trace(long_frame(loads.counts, np.arange(100, 800)), path, TraceMetadata())
    return path, loads


def invoke(*args: str):
    return CliRunner().invoke(app, ["predict", *map(str, args)], env=ENV)


def test_naive_and_sw_avg_long_table(trace, tmp_path):
    path, loads = trace
    out = tmp_path / "f.parquet"
    result = invoke(path, "--predictor", "naive,sw_avg", "--horizon", 30, "--window", 10,
                    "-o", out)
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(out)
    assert dict(frame.schema) == FORECAST_SCHEMA
    assert frame.height == 2 * 2 * 30 * 6
    assert frame["origin"].unique().to_list() == [799]
    assert frame["step"].min() == 800 and frame["step"].max() == 829
    sums = frame.group_by("predictor", "step", "layer").agg(pl.col("share").sum())
    np.testing.assert_allclose(sums["share"], 1.0)
    naive = frame.filter(pl.col("predictor") == "naive", pl.col("step") == 829,
                         pl.col("layer") == 1).sort("expert")["share"].to_numpy()
    np.testing.assert_allclose(naive, loads.shares[1, -1])
    sw = frame.filter(pl.col("predictor") == "sw_avg", pl.col("step") == 800,
                      pl.col("layer") == 0).sort("expert")["share"].to_numpy()
    np.testing.assert_allclose(sw, loads.shares[0, -10:].mean(axis=0))
    assert "hottest" in result.output and "max/mean" in result.output
    assert f"wroteforecasts{out}" in "".join(result.output.split())  # rich may wrap the path


def test_summary_names_the_hottest_expert(trace):
    _, loads = trace
    forecasts = forecast_loads(loads, "naive", 5)
    row = forecasts.summary().filter(pl.col("layer") == 0).row(0, named=True)
    last = loads.shares[0, -1]
    assert row["hottest"][0] == int(last.argmax())
    assert row["coldest"][0] == int(last.argmin())
    assert row["imbalance"] == pytest.approx(last.max() * 6)


def test_at_moves_the_origin(trace, tmp_path):
    path, loads = trace
    out = tmp_path / "f.parquet"
    result = invoke(path, "--predictor", "naive", "--horizon", 5, "--at", 300, "-o", out)
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(out)
    assert frame["origin"].unique().to_list() == [300]
    first = frame.filter(pl.col("step") == 301, pl.col("layer") == 0).sort("expert")
    np.testing.assert_allclose(first["share"].to_numpy(), loads.shares[0, 200])


def test_all_predictors(trace, tmp_path):
    path, _ = trace
    out = tmp_path / "f.parquet"
    result = invoke(path, "--predictor", "all", "--horizon", 40, "--bucket", 10,
                    "--order", "1,1,1", "--seed", 1, "-o", out)
    assert result.exit_code == 0, result.output
    frame = pl.read_parquet(out)
    assert sorted(frame["predictor"].unique()) == ["arima", "auto", "drift", "lstm", "naive",
                                                   "sw_avg"]
    assert frame["share"].min() >= 0
    # every forecast carries the bounds of each expert's mean share over the horizon
    bounds = frame.group_by("predictor", "layer", "expert").agg(
        pl.col("mean_lower").n_unique().alias("lowers"), pl.col("mean_lower").first(),
        pl.col("mean_upper").first())
    assert (bounds["lowers"] == 1).all()  # one bound per expert, repeated on every step
    known = bounds.filter(pl.col("mean_lower").is_not_nan())
    assert known.height and (known["mean_lower"] <= known["mean_upper"]).all()


@pytest.mark.parametrize("args, message", [
    (["--predictor", "prophet"], "unknown predictor 'prophet'"),
    (["--at", "5"], "--at 5 is outside the trace's steps 100..799"),
    (["--order", "5,1"], "--order takes p,d,q"),
    (["--horizon", "0"], "--horizon must be a positive number of steps"),
    (["--bucket", "0"], "--bucket must be a positive number of steps"),
    (["--predictor", "arima", "--bucket", "100"],
     "arima (30 bucket(s) of 100 steps): needs 3,000 steps = 3,000 samples of history"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(trace, tmp_path, args, message):
    path, _ = trace
    out = tmp_path / "f.parquet"
    result = invoke(path, *args, "-o", out)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not list(tmp_path.glob(".f.parquet*"))


def test_missing_trace_is_exit_2(tmp_path):
    result = invoke(tmp_path / "nope.parquet", "-o", tmp_path / "f.parquet")
    assert result.exit_code == 2 and "no such file" in result.output


def test_through_the_installed_entry_point(trace, tmp_path):
    path, _ = trace
    out = tmp_path / "f.parquet"
    result = run_cli("predict", str(path), "--predictor", "sw_avg", "--horizon", "10",
                     "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert pl.read_parquet(out).height == 2 * 10 * 6
    bad = run_cli("predict", str(path), "--horizon", "-3", "-o", str(tmp_path / "g.parquet"))
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "--horizon" in bad.stderr


class _HeldBack:
    """A predictor that always forecasts with its simpler rule (the last value) and says so,
    as an LSTM with too little history does."""

    name = "heldback"

    def __init__(self, options, *, train=None, progress=None):
        self.fallback = None

    def fit(self, history):
        self._last = history.shares[:, -1:]
        self.fallback = "too little history to train: forecast with the last value"
        return self

    def forecast(self, horizon):
        return np.repeat(self._last, horizon, axis=1)

    def uncertainty(self, horizon):
        return None


def test_a_predictor_that_fell_back_is_said_on_stderr_in_the_json_and_the_table(
        trace, tmp_path, monkeypatch):
    import json

    from moetrace.forecast import FALLBACKS_KEY
    from moetrace.predictors.base import REGISTRY

    monkeypatch.setitem(REGISTRY, "heldback", _HeldBack)
    path, _ = trace
    out, doc = tmp_path / "f.parquet", tmp_path / "f.json"
    result = CliRunner().invoke(app, ["predict", str(path), "--predictors", "heldback,naive",
                                      "--horizon", "20", "-o", str(out), "--json-out",
                                      str(doc)], env=ENV)
    assert result.exit_code == 0, result.output
    assert ("moetrace: note: heldback fell back: too little history to train: forecast with "
            "the last value") in result.stderr
    assert "naive fell back" not in result.stderr
    fallbacks = json.loads(doc.read_text())["fallbacks"]
    assert fallbacks == {"heldback": "too little history to train: forecast with the last value",
                         "naive": None}
    import pyarrow.parquet as pq

    stored = pq.read_metadata(out).metadata[FALLBACKS_KEY.encode()]
    assert json.loads(stored) == fallbacks
