"""SmartMoE / FastMoE expert-selection tables: fixtures written here in the format of the
public dataset (table_iter{N}_rank{R}.log, lines `layer:[[counts] per micro-batch]`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from moetrace.errors import TraceError
from moetrace.record.importers import import_trace
from moetrace.trace import read_trace


def write_tables(directory, counts, iterations, ranks=2, micro=3, skip=()):
    """counts[rank, iteration, layer, micro-batch, expert] as the dataset stores them."""
    directory.mkdir(exist_ok=True)
    for r in range(ranks):
        for i, it in enumerate(iterations):
            if (it, r) in skip:
                continue
            lines = [f"{layer}:{json.dumps([[float(v) for v in mb] for mb in counts[r, i, layer]])}"
                     for layer in range(counts.shape[2])]
            (directory / f"table_iter{it}_rank{r}.log").write_text("\n".join(lines) + "\n")


@pytest.fixture
def tables(tmp_path):
    rng = np.random.default_rng(0)
    iterations = [1, 11, 21, 31]
    counts = rng.integers(0, 500, size=(2, len(iterations), 3, 3, 8))  # 2 ranks, 3 layers, 8 ex.
    write_tables(tmp_path / "moe_trace", counts, iterations)
    return tmp_path / "moe_trace", counts, iterations


def test_tables_import_exactly_as_the_sum_over_ranks_and_micro_batches(tables, tmp_path):
    src, counts, iterations = tables
    out = import_trace("smartmoe", src, tmp_path / "t.parquet", top_k=2)
    trace = read_trace(out)
    assert trace.steps.tolist() == iterations  # steps are the iteration numbers
    assert trace.interval == 10 and trace.gaps == []  # a sampled trace, not a gapped one
    assert trace.has_rank
    want = counts.sum(axis=(0, 3)).transpose(1, 0, 2)  # [layer, step, expert]
    np.testing.assert_array_equal(trace.loads().counts, want)
    meta = trace.metadata
    assert meta.top_k == 2 and meta.extra["every"] == 10 and meta.extra["ranks"] == 2
    assert meta.tokens_per_step == int(want[0, 0].sum()) // 2


def test_missing_tables_and_bad_lines_are_one_line_errors(tables, tmp_path):
    src, counts, iterations = tables
    (src / "table_iter21_rank1.log").unlink()
    with pytest.raises(TraceError, match="1 table.s. missing, first: iteration 21, rank 1"):
        import_trace("smartmoe", src, tmp_path / "t.parquet")
    (src / "table_iter21_rank1.log").write_text("0:[[1.0, 2.5]]\n")
    with pytest.raises(TraceError, match="whole non-negative numbers"):
        import_trace("smartmoe", src, tmp_path / "t.parquet")
    (src / "table_iter21_rank1.log").write_text("zero:[[1.0]]\n")
    result = run_cli("record", "--from", "smartmoe", str(src), "-o", str(tmp_path / "t.parquet"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "line 1 is not 'layer:[[counts] per micro-batch]'" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TraceError, match="no table_iter"):
        import_trace("smartmoe", empty, tmp_path / "t.parquet")
