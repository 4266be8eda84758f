"""The reader: every accepted layout reads back the same counts; every bad input fails clearly."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import long_frame, run_cli

from moetrace import TraceError, TraceMetadata, read_trace, write_trace


def test_long_file_round_trip(tmp_path, small_counts):
    meta = TraceMetadata(model="tiny", n_layers=3, n_experts=4, top_k=1, tokens_per_step=100,
                         source="simulated", extra={"true_boundaries": [1, 2, None]})
    write_trace(long_frame(small_counts), tmp_path / "t.parquet", meta)
    trace = read_trace(tmp_path / "t.parquet")
    assert (trace.n_layers, trace.n_experts, trace.n_steps) == (3, 4, 5)
    assert trace.metadata == meta
    loads = trace.loads()
    np.testing.assert_array_equal(loads.counts, small_counts)
    np.testing.assert_allclose(loads.shares.sum(axis=-1), 1.0)
    np.testing.assert_allclose(loads.shares[1, 2], small_counts[1, 2] / 100)


def test_loads_selects_layers_and_steps(tmp_path, small_counts):
    write_trace(long_frame(small_counts, steps=np.arange(10, 15)), tmp_path / "t.parquet",
                TraceMetadata())
    loads = read_trace(tmp_path / "t.parquet").loads(layers=[2, 0], start=11, stop=13)
    np.testing.assert_array_equal(loads.steps, [11, 12, 13])
    np.testing.assert_array_equal(loads.counts, small_counts[[2, 0]][:, 1:4])
    np.testing.assert_array_equal(loads.upto(12).steps, [11, 12])


def test_unsorted_rows_and_missing_experts(tmp_path, small_counts):
    counts = small_counts.copy()
    counts[:, 3, 2] = 0
    counts[:, 3, 0] += 1  # keep every layer's step 3 non-empty even if expert 2 held it all
    frame = long_frame(counts).filter(~((pl.col("step") == 3) & (pl.col("expert") == 2)))  # absent
    write_trace(frame.sample(fraction=1.0, shuffle=True, seed=1), tmp_path / "t.parquet",
                TraceMetadata())
    np.testing.assert_array_equal(read_trace(tmp_path / "t.parquet").loads().counts, counts)


def test_gaps_are_allowed_and_reported(tmp_path, small_counts):
    write_trace(long_frame(small_counts, steps=[0, 1, 5, 6, 9]), tmp_path / "t.parquet",
                TraceMetadata())
    trace = read_trace(tmp_path / "t.parquet")
    assert trace.gaps == [(2, 4), (7, 8)]
    info = json.loads(run_cli("info", str(tmp_path / "t.parquet"), "--json", check=True).stdout)
    assert info["steps"] == {"first": 0, "last": 9, "count": 5, "missing": 5, "interval": 1,
                             "gaps": [
        {"first_missing": 2, "last_missing": 4}, {"first_missing": 7, "last_missing": 8}]}


def test_wide_layout(tmp_path, small_counts):
    wide = long_frame(small_counts).pivot(on="expert", index=["step", "layer"], values="tokens")
    wide = wide.rename({c: f"expert_{c}" for c in wide.columns if c.isdigit()})
    wide.write_parquet(tmp_path / "wide.parquet")
    np.testing.assert_array_equal(read_trace(tmp_path / "wide.parquet").loads().counts,
                                  small_counts)


def test_directory_glob_and_hive_ranks(tmp_path, small_counts):
    half = small_counts // 2
    for rank, part in ((0, half), (1, small_counts - half)):
        frame = long_frame(part)
        for i, (lo, hi) in enumerate(((0, 3), (3, 5))):
            d = tmp_path / "rec" / f"rank={rank}"
            d.mkdir(parents=True, exist_ok=True)
            frame.filter(pl.col("step").is_between(lo, hi - 1)).write_parquet(
                d / f"part-{i:06d}.parquet")
    (tmp_path / "rec" / "rank=0" / ".part-000002.parquet.x.tmp").write_bytes(b"half-written")
    trace = read_trace(tmp_path / "rec")
    assert trace.has_rank
    np.testing.assert_array_equal(trace.loads().counts, small_counts)
    globbed = read_trace(str(tmp_path / "rec" / "rank=*" / "*.parquet"))
    np.testing.assert_array_equal(globbed.loads().counts, small_counts)


def test_explicit_rank_column_is_summed(tmp_path, small_counts):
    half = small_counts // 2
    frame = pl.concat([long_frame(half).with_columns(rank=pl.lit(0)),
                       long_frame(small_counts - half).with_columns(rank=pl.lit(1))])
    write_trace(frame, tmp_path / "r.parquet", TraceMetadata())
    np.testing.assert_array_equal(read_trace(tmp_path / "r.parquet").loads().counts,
                                  small_counts)


def test_float_tokens_that_are_whole_numbers_are_accepted(tmp_path, small_counts):
    long_frame(small_counts).with_columns(pl.col("tokens").cast(pl.Float64)).write_parquet(
        tmp_path / "f.parquet")
    np.testing.assert_array_equal(read_trace(tmp_path / "f.parquet").loads().counts,
                                  small_counts)


# --- bad input: one line naming the file and the problem, exit 2, no traceback -------------

def _bad(tmp_path, small_counts, case: str):
    path = tmp_path / "bad.parquet"
    frame = long_frame(small_counts)
    if case == "missing":
        return tmp_path / "nope.parquet", "no such file or directory"
    if case == "not-parquet":
        path.write_bytes(bytes(range(256)) * 4)
        return path, "not a readable Parquet file"
    if case == "csv":  # what to run instead, with this file's name in it
        path.write_text("step,layer,expert,tokens\n0,0,0,1\n")
        return path, f"not Parquet but CSV text; import it with: moetrace record --from csv " \
                     f"{path} -o TRACE.parquet"
    if case == "empty-file":
        path.write_bytes(b"")
        return path, "empty file"
    if case == "truncated":
        frame.write_parquet(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, "not a readable Parquet file"
    if case == "missing-column":
        frame.drop("expert").write_parquet(path)
        return path, "missing required column 'expert'"
    if case == "fractional":
        frame.with_columns(pl.col("tokens").cast(pl.Float64) + 0.5).write_parquet(path)
        return path, "fractional token counts"
    if case == "string-tokens":
        frame.with_columns(pl.col("tokens").cast(pl.String)).write_parquet(path)
        return path, "column 'tokens' must hold token counts"
    if case == "string-step":
        frame.with_columns(pl.col("step").cast(pl.String)).write_parquet(path)
        return path, "column 'step' must hold integers"
    if case == "negative":
        frame.with_columns(pl.when(pl.col("step") == 2).then(-1).otherwise(pl.col("tokens"))
                           .alias("tokens")).write_parquet(path)
        return path, "negative token counts at step 2, layer 0"
    if case == "null":
        frame.with_columns(pl.when(pl.col("step") == 4).then(None).otherwise(pl.col("tokens"))
                           .alias("tokens")).write_parquet(path)
        return path, "null or NaN token counts at step 4, layer 0"
    if case == "null-expert":
        frame.with_columns(pl.when(pl.col("step") == 1).then(None).otherwise(pl.col("expert"))
                           .alias("expert")).write_parquet(path)
        return path, "null expert index at step 1, layer 0"
    if case == "duplicate":
        pl.concat([frame, frame.filter(pl.col("step") == 1)]).write_parquet(path)
        return path, "duplicate rows for the same (step, layer, expert) at step 1, layer 0"
    if case == "expert-counts":
        frame.filter(~((pl.col("layer") == 1) & (pl.col("expert") == 3))).write_parquet(path)
        return path, "layers have different expert counts: layer 1 has 3, layer 0 has 4"
    if case == "zero-step":
        frame.with_columns(pl.when((pl.col("step") == 3) & (pl.col("layer") == 2)).then(0)
                           .otherwise(pl.col("tokens")).alias("tokens")).write_parquet(path)
        return path, "layer 2 has zero tokens in total at step 3"
    if case == "layer-missing-at-step":
        frame.filter(~((pl.col("step") == 3) & (pl.col("layer") == 1))).write_parquet(path)
        return path, "layer 1 has no tokens at step 3"
    if case == "empty-trace":
        frame.head(0).write_parquet(path)
        return path, "empty trace: no rows"
    if case == "empty-row-group":  # pyarrow writes a row group of 0 rows (no statistics)
        pq.write_table(frame.head(0).to_arrow(), path)
        return path, "empty trace: no rows"
    if case == "empty-dir":
        (tmp_path / "d").mkdir()
        return tmp_path / "d", "directory holds no .parquet files"
    raise ValueError(case)


BAD_CASES = ["missing", "not-parquet", "csv", "empty-file", "truncated", "missing-column", "fractional",
             "string-tokens", "string-step", "negative", "null", "null-expert", "duplicate",
             "expert-counts", "zero-step", "layer-missing-at-step", "empty-trace", "empty-row-group",
             "empty-dir"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_raises_trace_error(tmp_path, small_counts, case):
    path, problem = _bad(tmp_path, small_counts, case)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert problem in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("case", ["missing", "truncated", "duplicate", "zero-step",
                                  "string-tokens", "csv"])
def test_bad_input_through_the_entry_point(tmp_path, small_counts, case):
    path, problem = _bad(tmp_path, small_counts, case)
    result = run_cli("info", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and problem in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_metadata_disagreeing_with_data(tmp_path, small_counts):
    write_trace(long_frame(small_counts), tmp_path / "m.parquet", TraceMetadata(n_experts=2))
    with pytest.raises(TraceError, match="has expert 3 but the metadata says 2 experts"):
        read_trace(tmp_path / "m.parquet")


def test_unreadable_metadata(tmp_path, small_counts):
    table = long_frame(small_counts).to_arrow()
    pq.write_table(table.replace_schema_metadata({"moetrace": "{not json"}), tmp_path / "x.parquet")
    with pytest.raises(TraceError, match="unreadable 'moetrace' metadata"):
        read_trace(tmp_path / "x.parquet")
    pq.write_table(pa.table({"a": [1]}), tmp_path / "y.parquet")
    with pytest.raises(TraceError, match="missing required column 'step'"):
        read_trace(tmp_path / "y.parquet")


def test_windows_reuse_computed_shares(small_counts):
    from moetrace.trace import Loads

    loads = Loads(np.arange(5), small_counts, (0, 1, 2))
    full = loads.shares
    part = loads.upto(2)
    assert np.shares_memory(part.shares, full)
    np.testing.assert_allclose(part.shares, small_counts[:, :3] / 100)
    fresh = Loads(np.arange(5), small_counts, (0, 1, 2)).window(1, 4)
    np.testing.assert_allclose(fresh.shares, small_counts[:, 1:4] / 100)


def test_token_sums_that_would_overflow_are_refused_not_wrapped(tmp_path):
    big = 2 ** 61  # each count is allowed; three of them in one step are not
    frame = pl.DataFrame({"step": [0, 0, 0], "layer": [0, 0, 0], "expert": [0, 1, 2],
                          "tokens": [big, big, big]})
    frame.write_parquet(tmp_path / "t.parquet")
    with pytest.raises(TraceError, match="add up to .* or more in one step and layer.* at step 0, layer 0"):
        read_trace(tmp_path / "t.parquet")
    ranks = pl.DataFrame({"step": [0, 0, 0], "layer": [0, 0, 0], "expert": [0, 0, 0],
                          "rank": [0, 1, 2], "tokens": [big, big, big]})
    ranks.write_parquet(tmp_path / "r.parquet")
    with pytest.raises(TraceError, match="of all ranks add up to .* or more"):
        read_trace(tmp_path / "r.parquet")
    result = run_cli("info", str(tmp_path / "t.parquet"))
    assert result.returncode == 2 and "zero tokens" not in result.stderr


def test_rank_sums_are_exact_integers_beyond_float_precision(tmp_path):
    exact = 2 ** 53 + 1  # float64 cannot hold it; the sum over ranks must still be exact
    frame = pl.DataFrame({"step": [0, 0, 0], "layer": [0, 0, 0], "expert": [0, 0, 1],
                          "rank": [0, 1, 0], "tokens": [exact, 2, 1]})
    frame.write_parquet(tmp_path / "t.parquet")
    assert read_trace(tmp_path / "t.parquet").loads().counts[0, 0].tolist() == [exact + 2, 1]


@pytest.mark.parametrize("name", ["run[1].parquet", "run*.parquet", "run?.parquet",
                                  "my run.parquet", "lauf-ü-日本.parquet"])
def test_an_existing_path_is_read_literally_never_as_a_pattern(tmp_path, small_counts, name):
    write_trace(long_frame(small_counts), tmp_path / name, TraceMetadata())
    write_trace(long_frame(small_counts[:, :2]), tmp_path / "run1.parquet", TraceMetadata())
    trace = read_trace(tmp_path / name)
    assert trace.n_steps == 5 and trace.files == (tmp_path / name,)
    info = json.loads(run_cli("info", str(tmp_path / name), "--json", check=True).stdout)
    assert info["steps"]["count"] == 5
    # a path that does not exist may be a pattern
    assert read_trace(str(tmp_path / "run1.parq*")).n_steps == 2


def test_ids_out_of_range_are_refused_in_one_line(tmp_path):
    frame = pl.DataFrame({"step": [0], "layer": [0], "expert": [2 ** 31 - 1], "tokens": [5]},
                         schema={"step": pl.Int64, "layer": pl.Int32, "expert": pl.Int32,
                                 "tokens": pl.Int64})
    frame.write_parquet(tmp_path / "t.parquet")
    for command in ("info", "analyze"):
        result = run_cli(command, str(tmp_path / "t.parquet"))
        assert result.returncode == 2 and "expert index 2,147,483,647 is past the largest" \
            in result.stderr
        assert "negative dimensions" not in result.stderr
    big = pl.DataFrame({"step": [0], "layer": [0], "expert": [0], "tokens": [2 ** 63 + 1]},
                       schema={"step": pl.Int64, "layer": pl.Int32, "expert": pl.Int32,
                               "tokens": pl.UInt64})
    big.write_parquet(tmp_path / "u.parquet")
    result = run_cli("info", str(tmp_path / "u.parquet"))
    assert result.returncode == 2 and "internal error" not in result.stderr
    assert "a token count of" in result.stderr


def test_validation_in_small_batches_folds_the_summary_and_still_finds_duplicates(
        tmp_path, small_counts, monkeypatch):
    """A large trace is validated batch by batch with its summary folded as it goes: the
    totals are those of one pass over everything, and a row repeated in a later batch (each
    batch on its own has no duplicate) is still a duplicate."""
    from moetrace.trace import validate as reader

    frame = long_frame(small_counts)  # 3 layers x 5 steps x 4 experts = 60 rows
    write_trace(frame, tmp_path / "t.parquet", TraceMetadata())
    whole = read_trace(tmp_path / "t.parquet").step_totals
    monkeypatch.setattr(reader, "_BATCH_ROWS", 7)  # 9 batches, folded several times
    monkeypatch.setattr(reader, "_FOLD_ROWS", 5)
    small = read_trace(tmp_path / "t.parquet").step_totals
    assert small.sort("step", "layer").equals(whole.sort("step", "layer"))
    pl.concat([frame, frame.filter((pl.col("step") == 1) & (pl.col("layer") == 0)
                                   & (pl.col("expert") == 2))]).write_parquet(tmp_path / "d.parquet")
    with pytest.raises(TraceError, match="duplicate rows .* at step 1, layer 0"):
        read_trace(tmp_path / "d.parquet")


def test_keys_split_over_row_groups_are_checked_in_those_row_groups_only(tmp_path, monkeypatch):
    """A foreign file may cut a (step, layer) between row groups: a duplicate across the cut
    is found by reading the row groups that can hold the cut keys, not the whole file; a file
    moetrace writes keeps every key in one row group and is never read twice."""
    from moetrace.simulate import simulate_trace
    from moetrace.trace import validate as reader

    counts = np.random.default_rng(0).integers(1, 50, size=(2, 40, 8))
    frame = long_frame(counts).sort("step", "layer", "expert")  # 640 rows
    twin = frame.filter((pl.col("step") == 31) & (pl.col("layer") == 0)
                        & (pl.col("expert") == 0))  # row 496
    rows = pl.concat([frame.slice(0, 501), twin, frame.slice(501)])  # the key runs to row 504
    table = rows.to_arrow()
    with pq.ParquetWriter(tmp_path / "cut.parquet", table.schema) as writer:
        for lo, hi in ((0, 160), (160, 320), (320, 500), (500, 585), (585, 641)):
            writer.write_table(table.slice(lo, hi - lo))  # keys whole but at row 500
    batch_rows = reader._BATCH_ROWS
    monkeypatch.setattr(reader, "_BATCH_ROWS", 200)  # batches: groups 0, 1, 2, then 3 and 4
    read = []
    original = reader._batches
    monkeypatch.setattr(reader, "_batches", lambda plan, groups=None: (
        read.append(groups), original(plan, groups))[1])
    with pytest.raises(TraceError, match="duplicate rows .* at step 31, layer 0"):
        read_trace(tmp_path / "cut.parquet")
    assert read[-1] == [2, 3]  # the second look: the row groups the cut key is in
    monkeypatch.setattr(reader, "_BATCH_ROWS", batch_rows)
    simulate_trace(tmp_path / "sim.parquet", preset="gpt3-125m", steps=300, layers=3, seed=0)
    read.clear()
    read_trace(tmp_path / "sim.parquet")
    assert read == [None]  # one pass


def test_an_unsorted_file_read_in_small_batches_still_finds_a_duplicate(tmp_path, monkeypatch):
    """Shuffled rows split every key over every batch: the second look reads everything (past
    the matching limit) and still finds the one repeated row, or none."""
    from moetrace.trace import validate as reader

    counts = np.random.default_rng(1).integers(1, 50, size=(2, 30, 8))
    frame = long_frame(counts)
    monkeypatch.setattr(reader, "_BATCH_ROWS", 50)
    monkeypatch.setattr(reader, "_SPLIT_MATCH_LIMIT", 3)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=2)
    pq.write_table(shuffled.to_arrow(), tmp_path / "ok.parquet", row_group_size=50)
    np.testing.assert_array_equal(read_trace(tmp_path / "ok.parquet").loads().counts, counts)
    twin = frame.filter((pl.col("step") == 7) & (pl.col("layer") == 1) & (pl.col("expert") == 5))
    pq.write_table(pl.concat([shuffled, twin]).sample(fraction=1.0, shuffle=True, seed=3)
                   .to_arrow(), tmp_path / "dup.parquet", row_group_size=50)
    with pytest.raises(TraceError, match="duplicate rows .* at step 7, layer 1"):
        read_trace(tmp_path / "dup.parquet")
