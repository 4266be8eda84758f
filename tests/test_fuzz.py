"""Property-based tests: a trace is read exactly as written, or refused in one line.

Random valid traces (long and wide, with and without ranks, every integer type) round-trip;
random corruptions (byte flips, truncation, schema changes: types, nulls, NaN, negative and
huge values, extra and missing columns, wide layouts with bad names) either read as what the
file holds or end in exit 2 with one line and no traceback. Bounded in examples so the suite
stays fast; `benchmarks/bench_fuzz.py` runs the bit flips longer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import long_frame, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.errors import MoetraceError
from moetrace.record.importers import import_trace
from moetrace.trace import TraceMetadata, read_trace, write_trace

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
FLIP_FUZZ = Path(__file__).with_name("flip_fuzz.py")


@st.composite
def traces(draw):
    """counts[layer, step, expert] with every (step, layer) routing some tokens, and steps."""
    n_layers = draw(st.integers(1, 3))
    n_steps = draw(st.integers(1, 6))
    n_experts = draw(st.integers(1, 5))
    big = draw(st.booleans())
    high = 2 ** 40 if big else 1000
    counts = np.array(draw(st.lists(st.integers(0, high), min_size=n_layers * n_steps * n_experts,
                                    max_size=n_layers * n_steps * n_experts)), dtype=np.int64)
    counts = counts.reshape(n_layers, n_steps, n_experts)
    counts[..., 0] += (counts.sum(axis=2) == 0)  # every layer routes something at every step
    gaps = draw(st.lists(st.integers(1, 50), min_size=n_steps, max_size=n_steps))
    steps = np.cumsum(gaps) - gaps[0]
    return counts, steps


def fresh(tmp_path: Path) -> Path:
    """A new directory per hypothesis example (the tmp_path fixture is shared by all)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_exit_2(result, path):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("moetrace: error: "), result.output
    assert "Traceback" not in result.output


@SETTINGS
@given(data=traces(), layout=st.sampled_from(["long", "wide", "ranks"]),
       dtype=st.sampled_from(["int64", "int32", "uint32", "uint64", "float64"]))
def test_random_valid_traces_round_trip(tmp_path, data, layout, dtype):
    tmp_path = fresh(tmp_path)
    counts, steps = data
    if dtype in ("int32", "uint32") and counts.max() >= 2 ** 31:
        counts = counts % 1000 + 1
    frame = long_frame(counts, steps)
    if layout == "wide":
        frame = frame.pivot(on="expert", index=["step", "layer"], values="tokens")
        frame = frame.rename({c: f"expert_{c}" for c in frame.columns if c.isdigit()})
        cols = [c for c in frame.columns if c.startswith("expert_")]
        frame = frame.with_columns(pl.col(cols).cast(getattr(pl, dtype.capitalize()
                                                             .replace("Uint", "UInt"))))
    else:
        if layout == "ranks":  # split every count over two ranks
            half = frame.with_columns(pl.col("tokens") // 2)
            frame = pl.concat([half.with_columns(pl.lit(0).alias("rank")),
                               frame.with_columns((pl.col("tokens") - pl.col("tokens") // 2),
                                                  pl.lit(1).alias("rank"))])
        frame = frame.with_columns(pl.col("tokens").cast(
            getattr(pl, dtype.capitalize().replace("Uint", "UInt"))))
    path = tmp_path / "t.parquet"
    frame.sample(fraction=1.0, shuffle=True, seed=0).write_parquet(path)
    trace = read_trace(path)
    loads = trace.loads()
    np.testing.assert_array_equal(loads.steps, steps)
    np.testing.assert_array_equal(loads.counts, counts)


def _corrupt_schema(frame: pl.DataFrame, how: str, rng: np.random.Generator) -> pl.DataFrame:
    row = int(rng.integers(frame.height))
    pick = pl.int_range(pl.len()) == row
    if how == "string_tokens":
        return frame.with_columns(pl.col("tokens").cast(pl.String))
    if how == "float_fraction":
        return frame.with_columns(pl.when(pick).then(pl.col("tokens") + 0.5)
                                  .otherwise(pl.col("tokens").cast(pl.Float64)).alias("tokens"))
    if how == "nan":
        return frame.with_columns(pl.when(pick).then(float("nan"))
                                  .otherwise(pl.col("tokens").cast(pl.Float64)).alias("tokens"))
    if how in ("null_tokens", "null_step", "null_expert", "null_layer"):
        col = how.split("_")[1] if how != "null_tokens" else "tokens"
        return frame.with_columns(pl.when(pick).then(None).otherwise(pl.col(col)).alias(col))
    if how in ("negative_tokens", "negative_expert", "negative_step", "negative_layer"):
        col = how.split("_")[1]
        return frame.with_columns(pl.when(pick).then(-1).otherwise(pl.col(col)).alias(col))
    if how == "huge_tokens":
        return frame.with_columns(pl.when(pick).then(2 ** 63 - 1).otherwise(pl.col("tokens"))
                                  .alias("tokens"))
    if how == "huge_uint64":
        return frame.with_columns(pl.when(pick).then(pl.lit(2 ** 63 + 5, pl.UInt64))
                                  .otherwise(pl.col("tokens").cast(pl.UInt64)).alias("tokens"))
    if how == "huge_expert":
        return frame.with_columns(pl.when(pick).then(2 ** 31 - 1).otherwise(pl.col("expert"))
                                  .cast(pl.Int32).alias("expert"))
    if how == "extra_column":
        return frame.with_columns(pl.lit("x").alias("comment"))
    if how.startswith("missing_"):
        return frame.drop(how.split("_", 1)[1])
    wide = frame.pivot(on="expert", index=["step", "layer"], values="tokens")
    if how == "wide_bad_name":  # an expert id past the largest
        return wide.with_columns(pl.lit(1).alias("expert_99999999"))
    if how == "wide_text_column":  # an expert column that holds no counts
        return wide.with_columns(pl.lit("many").alias("expert_0"))
    if how == "wide_unknown_column":  # not an expert column at all: ignored
        return wide.with_columns(pl.lit(7).alias("notes"))
    raise AssertionError(how)


CORRUPTIONS = ["string_tokens", "float_fraction", "nan", "null_tokens", "null_step",
               "null_expert", "null_layer", "negative_tokens", "negative_expert", "negative_step",
               "negative_layer", "huge_tokens", "huge_uint64", "huge_expert", "extra_column",
               "missing_tokens", "missing_expert", "missing_step", "wide_bad_name",
               "wide_text_column", "wide_unknown_column"]
#: corruptions after which the file still holds the same, valid trace
HARMLESS = {"extra_column", "wide_unknown_column"}


@SETTINGS
@given(data=traces(), how=st.sampled_from(CORRUPTIONS), seed=st.integers(0, 2 ** 16))
def test_schema_corruptions_read_correctly_or_end_in_one_line(tmp_path, data, how, seed):
    tmp_path = fresh(tmp_path)
    counts, steps = data
    frame = long_frame(counts, steps)
    bad = _corrupt_schema(frame, how, np.random.default_rng(seed))
    path = tmp_path / "t.parquet"
    bad.write_parquet(path)
    result = _cli("info", path)
    if how in HARMLESS:  # read exactly as the file holds it
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(read_trace(path).loads().counts, counts)
    else:
        assert_one_line_exit_2(result, path)


@SETTINGS
@given(data=traces(), seed=st.integers(0, 2 ** 32 - 1), cut=st.floats(0, 1))
def test_truncated_files_are_refused_in_one_line(tmp_path, data, seed, cut):
    tmp_path = fresh(tmp_path)
    counts, steps = data
    path = tmp_path / "t.parquet"
    write_trace(long_frame(counts, steps), path, TraceMetadata())
    raw = path.read_bytes()
    path.write_bytes(raw[:int(cut * (len(raw) - 1))])
    assert_one_line_exit_2(_cli("info", path), path)


@pytest.mark.slow
def test_bit_flips_anywhere_in_a_moetrace_file_are_refused_never_misread(tmp_path):
    """Over 1,000 single-bit flips (500 anywhere in the file, 500 in its footer, and every bit
    of the magic bytes and the footer's length): none reads as different data (dimensions,
    metadata, steps, counts), none is an internal error or a crash; every one is refused but a
    flip in the whole-file checksum record's own key name, which leaves the file as an older
    moetrace wrote it (read the same, at the older integrity level). The benchmark runs
    longer."""
    path = tmp_path / "t.parquet"
    result = run_cli("record", "--simulate", "gpt3-125m", "--steps", "500", "--layers", "2",
                     "--experts", "8", "-o", str(path))
    assert result.returncode == 0, result.stderr
    run = subprocess.run([sys.executable, str(FLIP_FUZZ), str(path), "500", "11"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]  # a native crash would show here
    tally = json.loads(run.stdout)
    assert tally["flips"] >= 1000
    assert tally.get("different", 0) == 0 and tally.get("internal_error", 0) == 0, tally
    key = b"moetrace.checksum"
    at = path.read_bytes().rfind(key)
    assert all(at <= byte < at + len(key) for byte in tally["same_at"]), tally


def test_foreign_files_without_checksums_are_read_and_say_so(tmp_path, small_counts):
    path = tmp_path / "foreign.parquet"
    long_frame(small_counts).write_parquet(path)
    assert not read_trace(path).checksummed
    out = run_cli("info", str(path))
    assert out.returncode == 0 and "corruption of this file cannot be detected" in out.stdout
    ours = tmp_path / "ours.parquet"
    write_trace(long_frame(small_counts), ours, TraceMetadata())
    assert read_trace(ours).checksummed
    assert "page checksums verified" in run_cli("info", str(ours)).stdout


def test_metadata_that_does_not_match_its_checksum_is_refused(tmp_path, small_counts):
    path = tmp_path / "t.parquet"
    write_trace(long_frame(small_counts), path, TraceMetadata(n_experts=4))
    table = pq.read_table(path)
    meta = dict(table.schema.metadata)
    meta[b"moetrace"] = meta[b"moetrace"].replace(b'"n_experts": 4', b'"n_experts": 5')
    pq.write_table(table.replace_schema_metadata(meta), path)
    with pytest.raises(MoetraceError, match="does not match the checksum"):
        read_trace(path)


@st.composite
def csv_tables(draw):
    counts, steps = draw(traces())
    return long_frame(counts, steps), counts, steps


@SETTINGS
@given(data=csv_tables(), corrupt=st.sampled_from([None, "text", "negative", "fraction",
                                                    "missing_layer", "empty"]))
def test_csv_import_round_trips_or_refuses_in_one_line(tmp_path, data, corrupt):
    tmp_path = fresh(tmp_path)
    frame, counts, steps = data
    src, out = tmp_path / "loads.csv", tmp_path / "t.parquet"
    text = frame.write_csv()
    lines = text.splitlines()
    if corrupt == "text":
        lines[1] = "a,b,c,d"
    elif corrupt == "negative":
        lines[1] = ",".join(lines[1].split(",")[:3] + ["-5"])
    elif corrupt == "fraction":
        lines[1] = ",".join(lines[1].split(",")[:3] + ["2.5"])
    elif corrupt == "missing_layer":
        lines[0] = lines[0].replace("layer", "lair")
    elif corrupt == "empty":
        lines = lines[:1]
    src.write_text("\n".join(lines) + "\n")
    if corrupt is None:
        import_trace("csv", src, out)
        np.testing.assert_array_equal(read_trace(out).loads().counts, counts)
        return
    result = _cli("record", "--from", "csv", src, "-o", out)
    assert_one_line_exit_2(result, src)
    assert not out.exists()


@SETTINGS
@given(data=traces(), garbage=st.binary(min_size=0, max_size=64), where=st.floats(0, 1))
def test_megatron_router_traces_round_trip_or_refuse(tmp_path, data, garbage, where):
    tmp_path = fresh(tmp_path)
    counts, steps = data
    src = tmp_path / "router_trace_rank0.jsonl"
    lines = []
    for t, step in enumerate(steps):
        for layer in range(counts.shape[0]):
            ids = np.repeat(np.arange(counts.shape[2]), np.minimum(counts[layer, t], 3))
            lines.append(json.dumps({"step": int(step), "block": "decoder", "layer": layer,
                                     "topk": 1, "top_indices": [[int(i)] for i in ids]}))
    text = ("\n".join(lines) + "\n").encode()
    cut = int(where * len(text))
    src.write_bytes(text[:cut] + garbage + text[cut:] if garbage else text)
    out = tmp_path / "t.parquet"
    # the dump names only the experts that were routed to: their number is stated
    result = _cli("record", "--from", "megatron-router-trace", src, "-o", out,
                  "--experts", counts.shape[2])
    if not garbage:
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(read_trace(out).loads().counts,
                                      np.minimum(counts, 3))
    elif result.exit_code != 0:
        assert_one_line_exit_2(result, src)


def test_wide_arrow_table_with_bad_types_is_one_line(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"step": [0], "layer": [0], "expert_0": ["many"]}), path)
    result = _cli("info", path)
    assert_one_line_exit_2(result, path)
    assert "must hold token counts" in result.output
