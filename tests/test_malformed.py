"""Every kind of malformed trace a user can hand us, through `info` and `analyze`.

Each kind ends in exit 2 with exactly one line on stderr that names the path given, no
traceback, and nothing new on disk (not the outputs asked for, not a temporary). Every kind
runs in-process (CliRunner, quick); a representative few also run through the installed entry
point. A control checks that the unbroken trace every kind starts from is read and analyzed,
so each refusal is the malformation's doing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from conftest import long_frame, run_cli
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.trace import TraceMetadata, write_trace


def _counts() -> np.ndarray:
    """2 layers x 300 steps x 4 experts, 1,000 tokens per layer and step: long enough for
    `analyze` with its defaults."""
    rng = np.random.default_rng(3)
    shares = rng.dirichlet(np.ones(4), size=(2, 300))
    return np.stack([[rng.multinomial(1000, p) for p in layer] for layer in shares])


def _at(frame: pl.DataFrame, column: str, value, *, step: int = 7, layer: int = 1,
        dtype=None) -> pl.DataFrame:
    """``frame`` with ``column`` set to ``value`` in one row (step, layer, expert 2)."""
    row = (pl.col("step") == step) & (pl.col("layer") == layer) & (pl.col("expert") == 2)
    base = pl.col(column) if dtype is None else pl.col(column).cast(dtype)
    return frame.with_columns(pl.when(row).then(pl.lit(value, dtype=dtype)).otherwise(base)
                              .alias(column))


def _footer_start(data: bytes) -> int:
    return len(data) - 8 - int.from_bytes(data[-8:-4], "little")


def make(kind: str, root: Path) -> Path:
    """A file (or folder) of malformed ``kind`` in ``root``; the path a user would give."""
    frame = long_frame(_counts())
    path = root / "trace.parquet"
    if kind == "valid":
        write_trace(frame, path, TraceMetadata(n_layers=2, n_experts=4, top_k=1))
    elif kind == "empty-file":
        path.write_bytes(b"")
    elif kind == "empty-table":  # the four columns and no rows (a row group of none)
        pq.write_table(frame.head(0).to_arrow(), path)
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "csv-named-parquet":
        frame.write_csv(path)
    elif kind in ("truncated", "corrupt-footer"):
        write_trace(frame, path, TraceMetadata())
        data = bytearray(path.read_bytes())
        if kind == "truncated":
            data = data[:len(data) * 2 // 3]
        else:  # the footer's middle overwritten; its length and the magic kept
            start = _footer_start(bytes(data))
            middle = (start + len(data) - 8) // 2
            data[middle:middle + 64] = b"\xff" * 64
        path.write_bytes(bytes(data))
    elif kind == "folder-without-parquet":
        path = root / "runs"
        path.mkdir()
        (path / "notes.txt").write_text("step,layer,expert,tokens\n")
        frame.write_csv(path / "loads.csv")
    elif kind in ("missing-tokens", "missing-expert"):
        frame.drop(kind.split("-")[1]).write_parquet(path)
    elif kind == "string-counts":
        frame.with_columns(pl.col("tokens").cast(pl.String)).write_parquet(path)
    elif kind == "fractional-counts":
        _at(frame, "tokens", 2.5, dtype=pl.Float64).write_parquet(path)
    elif kind == "negative-counts":
        _at(frame, "tokens", -3).write_parquet(path)
    elif kind == "nan-counts":
        _at(frame, "tokens", float("nan"), dtype=pl.Float64).write_parquet(path)
    elif kind == "null-counts":
        _at(frame, "tokens", None, dtype=pl.Int64).write_parquet(path)
    elif kind == "negative-steps":
        frame.with_columns(pl.when(pl.col("step") < 5).then(pl.col("step") - 5)
                           .otherwise(pl.col("step")).alias("step")).write_parquet(path)
    elif kind == "duplicate-rows":
        pl.concat([frame, frame.filter((pl.col("step") == 9) & (pl.col("layer") == 0))]) \
            .write_parquet(path)
    elif kind == "layers-differ-in-experts":
        frame.filter(~((pl.col("layer") == 1) & (pl.col("expert") == 3))).write_parquet(path)
    elif kind == "step-summing-to-zero":
        frame.with_columns(pl.when((pl.col("step") == 11) & (pl.col("layer") == 0)).then(0)
                           .otherwise(pl.col("tokens")).alias("tokens")).write_parquet(path)
    else:
        raise ValueError(kind)
    return path


#: every kind, with the words its one line must hold besides the path
KINDS = {
    "empty-file": "empty file",
    "empty-table": "empty trace: no rows",
    "random-bytes": "not a readable Parquet file",
    "csv-named-parquet": "not Parquet but CSV text; import it with: moetrace record --from csv",
    "truncated": "not a readable Parquet file",
    "corrupt-footer": "corrupt",
    "folder-without-parquet": "directory holds no .parquet files",
    "missing-tokens": "missing required column 'tokens'",
    "missing-expert": "missing required column 'expert'",
    "string-counts": "column 'tokens' must hold token counts",
    "fractional-counts": "fractional token counts (tokens must be whole numbers) at step 7, "
                         "layer 1",
    "negative-counts": "negative token counts at step 7, layer 1",
    "nan-counts": "null or NaN token counts at step 7, layer 1",
    "null-counts": "null or NaN token counts at step 7, layer 1",
    "negative-steps": "negative step",
    "duplicate-rows": "duplicate rows for the same (step, layer, expert) at step 9, layer 0",
    "layers-differ-in-experts": "layers have different expert counts",
    "step-summing-to-zero": "layer 0 has zero tokens in total at step 11",
}
#: run through the installed entry point too: one of each family (not Parquet, broken
#: Parquet, wrong columns, wrong values, wrong totals)
ENTRY_POINT_KINDS = ["csv-named-parquet", "empty-table", "corrupt-footer", "missing-expert",
                     "nan-counts", "step-summing-to-zero"]


def _everything(root: Path) -> set[str]:
    """Every path below ``root``, hidden ones included, with sizes and times."""
    return {f"{p.relative_to(root)} {p.stat().st_size} {p.stat().st_mtime_ns}"
            for p in root.rglob("*")}


def _commands(path: Path, out: Path) -> dict[str, list[str]]:
    return {"info": ["info", str(path), "--json-out", str(out / "info.json")],
            "analyze": ["analyze", str(path), "--json-out", str(out / "states.json"),
                        "--out", str(out / "states")]}


def _check(code: int, stdout: str, stderr: str, path: Path, words: str) -> None:
    assert code == 2, (code, stdout, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("moetrace: error: ") and str(path) in lines[0], lines[0]
    assert words in lines[0], lines[0]
    assert "Traceback" not in stdout + stderr and stdout == "", stdout


def test_the_unbroken_trace_is_read_and_analyzed(tmp_path):
    path = make("valid", tmp_path)
    for name, args in _commands(path, tmp_path).items():
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (name, result.output)


@pytest.mark.parametrize("command", ["info", "analyze"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_malformed_input_is_one_line_exit_2_and_writes_nothing(tmp_path, kind, command):
    path = make(kind, tmp_path)
    before = _everything(tmp_path)
    result = CliRunner().invoke(app, _commands(path, tmp_path)[command])
    _check(result.exit_code, result.stdout, result.stderr, path, KINDS[kind])
    assert _everything(tmp_path) == before


@pytest.mark.parametrize("kind", ENTRY_POINT_KINDS)
def test_malformed_input_through_the_entry_point(tmp_path, kind):
    path = make(kind, tmp_path)
    before = _everything(tmp_path)
    for args in _commands(path, tmp_path).values():
        result = run_cli(*args)
        _check(result.returncode, result.stdout, result.stderr, path, KINDS[kind])
    assert _everything(tmp_path) == before
