"""Importers: fixtures built from each format's documented layout, counts checked by hand."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.errors import ParameterError, TraceError
from moetrace.record.importers import IMPORTERS, import_trace
from moetrace.trace import read_trace

runner = CliRunner()


# -- Megatron-LM router_trace_rank{R}.jsonl ------------------------------------------------

def _megatron_record(step, layer, rank, top_indices, block="decoder", **more):
    """One line as megatron/core/transformer/moe/router_trace.py writes it."""
    return {"step": step, "stage": "pre_dispatch", "block": block, "layer": layer,
            "rank": rank, "num_tokens": len(top_indices), "topk": len(top_indices[0]),
            "top_indices": top_indices, **more}


#: (rank, step, source layer) -> top-2 ids of each token; two micro-batches at rank 0 step 0
MEGATRON = [
    (0, 0, 1, [[0, 1], [0, 2], [3, 0]]),
    (0, 0, 1, [[1, 2]]),  # second micro-batch of the same step and layer
    (0, 0, 3, [[2, 3], [2, 1], [0, 2], [1, 3]]),
    (0, 0, 3, [[1, 0]]),  # ... which passes through layer 3 too
    (1, 0, 1, [[5, 0], [0, 1]]),
    (1, 0, 3, [[4, 5]]),
    (0, 1, 1, [[3, 2], [3, 1]]),
    (0, 1, 3, [[0, 1], [1, 2]]),
    (1, 1, 1, [[0, 5]]),
    (1, 1, 3, [[5, 4], [4, 0], [1, 1]]),
]


def _expected_megatron():
    """counts[step][trace layer][expert] by plain counting (source layers 1, 3 -> 0, 1)."""
    expected = {}
    for _rank, step, layer, ids in MEGATRON:
        counter = expected.setdefault((step, {1: 0, 3: 1}[layer]), Counter())
        counter.update(e for token in ids for e in token)
    return expected


@pytest.fixture
def megatron_dir(tmp_path):
    src = tmp_path / "router_traces"
    src.mkdir()
    for rank in (0, 1):
        lines = [_megatron_record(step, layer, rank, ids)
                 for r, step, layer, ids in MEGATRON if r == rank]
        if rank == 0:  # a multi-token-prediction head: its own router, not a decoder layer
            lines.append(_megatron_record(0, 1, 0, [[7, 7]], block="mtp", mtp_idx=0))
        (src / f"router_trace_rank{rank}.jsonl").write_text(
            "".join(json.dumps(line) + "\n" for line in lines))
    return src


def _counts(path):
    trace = read_trace(path)
    return trace, trace.loads()


def test_megatron_counts_all_ranks_and_micro_batches(megatron_dir, tmp_path):
    out = import_trace("megatron-router-trace", megatron_dir, tmp_path / "m.parquet",
                       n_experts=8)
    trace, loads = _counts(out)
    assert (trace.n_layers, trace.n_experts, list(loads.steps)) == (2, 8, [0, 1])
    for (step, layer), counter in _expected_megatron().items():
        want = [counter.get(e, 0) for e in range(8)]
        assert loads.counts[layer, step].tolist() == want
    # hand check of one cell: step 0, source layer 1: 0 appears 3 + 2 times over both ranks
    assert loads.counts[0, 0, 0] == 5
    meta = trace.metadata
    assert meta.source == "imported" and meta.top_k == 2
    assert meta.extra["source_layers"] == [1, 3]
    assert meta.tokens_per_step == (3 + 1 + 2) * 2 // 2  # tokens of layer 0, step 0


def test_megatron_single_file_and_inferred_experts(megatron_dir, tmp_path):
    out = import_trace("megatron-router-trace", megatron_dir / "router_trace_rank1.jsonl",
                       tmp_path / "r1.parquet")
    trace, loads = _counts(out)
    assert trace.n_experts == 6  # largest id seen (5) + 1
    assert loads.counts[1, 1].tolist() == [1, 2, 0, 0, 2, 1]  # [[5, 4], [4, 0], [1, 1]]


@pytest.mark.parametrize("content, problem", [
    ('{"step": 0, "layer": 1, "topk": 1}\n', "without 'top_indices'"),
    ('{"step": 0, "layer": 1, "top_indices": [[0]]\n', "not a Megatron router trace"),
    ('{"step": 0, "block": "mtp", "layer": 1, "top_indices": [[0]]}\n', "no decoder router"),
    ('{"step": 0, "layer": 1, "top_indices": [[0]]}\n{"step": 1, "layer": 2, '
     '"top_indices": [[1]]}\n', r"step 0, layer 2: 0 router record\(s\)"),
])
def test_megatron_bad_input_names_the_file(tmp_path, content, problem):
    src = tmp_path / "router_trace_rank0.jsonl"
    src.write_text(content)
    with pytest.raises(TraceError, match=problem) as err:
        import_trace("megatron-router-trace", src, tmp_path / "x.parquet")
    assert "router_trace_rank0.jsonl" in str(err.value)
    assert not (tmp_path / "x.parquet").exists()


def test_megatron_refuses_a_trace_with_skipped_router_records(megatron_dir, tmp_path):
    """The tracer returns without a record when capacity dropping makes the choices uneven:
    a layer with fewer records than the rank's other layers at a step lost tokens."""
    lines = (megatron_dir / "router_trace_rank0.jsonl").read_text().splitlines(keepends=True)
    kept = [line for line in lines if '"top_indices": [[1, 0]]' not in line]
    assert len(kept) == len(lines) - 1
    (megatron_dir / "router_trace_rank0.jsonl").write_text("".join(kept))
    with pytest.raises(TraceError, match=r"rank0.jsonl: step 0, layer 3: 1 router record\(s\) "
                       r"where the rank's other layers have 2 \(1 step\(s\) affected\)"
                       r".*capacity dropping"):
        import_trace("megatron-router-trace", megatron_dir, tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()


def test_megatron_expert_beyond_experts_option(megatron_dir, tmp_path):
    with pytest.raises(TraceError, match="expert id 5 found but --experts says 4"):
        import_trace("megatron-router-trace", megatron_dir, tmp_path / "x.parquet",
                     n_experts=4)


# -- SGLang expert distribution dumps ------------------------------------------------------

def _sglang_dump(path, logical_count, **more):
    """A dump as _StatAccumulator.dump(output_mode='file') saves it."""
    torch.save({"rank": 0, "logical_count": logical_count,
                "average_utilization_rate_over_window": None, **more}, path)


def test_sglang_drops_dense_layers_and_empty_slots_and_orders_files(tmp_path):
    rng = np.random.default_rng(0)
    first = rng.integers(1, 50, size=(3, 4, 5))
    first[:, 0] = 0  # layer 0 is dense: never routed
    first[2] = 0  # an unused slot of the circular buffer
    second = rng.integers(1, 50, size=(2, 4, 5))
    second[:, 0] = 0
    src = tmp_path / "dumps"
    src.mkdir()
    # the later dump sorts first by name; the time in the name decides the order
    _sglang_dump(src / "expert_distribution_recorder_1700000100.5.pt",
                 torch.tensor(second, dtype=torch.int32))
    _sglang_dump(src / "expert_distribution_recorder_999999999.25.pt",
                 torch.tensor(first, dtype=torch.int32))
    trace, loads = _counts(import_trace("sglang", src, tmp_path / "s.parquet"))
    assert (trace.n_layers, trace.n_experts) == (3, 5)
    assert list(loads.steps) == [0, 1, 3, 4]  # pass 2 was empty: a gap, not a shift
    assert trace.gaps == [(2, 2)]
    want = np.concatenate([first[:2], second])[:, 1:]  # (steps, layers 1..3, experts)
    assert np.array_equal(loads.counts, want.transpose(1, 0, 2))
    assert trace.metadata.extra["source_layers"] == [1, 2, 3]


def test_sglang_loads_only_with_weights_only(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    src = tmp_path / "evil.pt"
    torch.save({"logical_count": torch.ones(1, 1, 2, dtype=torch.int32), "x": Payload()}, src)
    with pytest.raises(TraceError, match=r"weights_only=True"):
        import_trace("sglang", src, tmp_path / "x.parquet")
    assert not marker.exists()


@pytest.mark.parametrize("content, problem", [
    ({"records": [], "last_physical_to_logical_map": None}, "'records' holds no forward"),
    ({"rank": 0}, "no 'logical_count' and no 'records'"),
    ({"physical_to_logical_map": torch.zeros(2, 3, dtype=torch.int64)}, "a placement"),
    ({"logical_count": torch.ones(2)}, "must have 2 or 3 dimensions"),
    ({"logical_count": torch.full((2, 3, 4), 0.5)}, "must hold whole numbers"),
    ([1, 2], "holds a list, not an SGLang dump"),
])
def test_sglang_bad_dumps(tmp_path, content, problem):
    src = tmp_path / "dump.pt"
    torch.save(content, src)
    with pytest.raises(TraceError, match=problem):
        import_trace("sglang", src, tmp_path / "x.parquet")


def test_sglang_garbage_file(tmp_path):
    src = tmp_path / "dump.pt"
    src.write_bytes(b"not a torch file at all")
    with pytest.raises(TraceError, match=r"cannot be loaded as data \(torch.load with "
                       r"weights_only=True\)"):
        import_trace("sglang", src, tmp_path / "x.parquet")


def test_sglang_files_must_agree_on_shape(tmp_path):
    _sglang_dump(tmp_path / "a_1.pt", torch.ones(2, 3, 4, dtype=torch.int32))
    _sglang_dump(tmp_path / "b_2.pt", torch.ones(2, 3, 5, dtype=torch.int32))
    with pytest.raises(TraceError, match="3 layers x 5 experts, but a_1.pt has 3 x 4"):
        import_trace("sglang", tmp_path, tmp_path / "x.parquet")


# -- CSV / TSV -----------------------------------------------------------------------------

def test_csv_long_with_ranks_sums_them(tmp_path):
    src = tmp_path / "long.csv"
    src.write_text("step,layer,expert,tokens,rank\n"
                   "0,0,0,3,0\n0,0,1,1,0\n0,0,0,2,1\n0,0,1,2,1\n"
                   "1,0,0,1,0\n1,0,1,7,0\n")
    trace, loads = _counts(import_trace("csv", src, tmp_path / "c.parquet"))
    assert loads.counts[0].tolist() == [[5, 3], [1, 7]]
    assert trace.metadata.extra["layout"] == "long"


def test_csv_wide_tsv_and_sniffed_semicolons(tmp_path):
    tsv = tmp_path / "wide.tsv"
    tsv.write_text("step\tlayer\texpert_0\texpert_1\texpert_2\n"
                   "0\t2\t1\t2\t3\n0\t5\t4\t0\t0\n1\t2\t0\t0\t9\n1\t5\t1\t1\t1\n")
    trace, loads = _counts(import_trace("csv", tsv, tmp_path / "w.parquet"))
    assert trace.metadata.extra["source_layers"] == [2, 5]
    assert loads.counts[:, 1].tolist() == [[0, 0, 9], [1, 1, 1]]
    semi = tmp_path / "wide.txt"
    semi.write_text("Step;Layer;e0;e1\n0;0;1.0;3.0\n1;0;2.0;2.0\n")
    _, loads = _counts(import_trace("csv", semi, tmp_path / "s.parquet"))
    assert loads.counts[0].tolist() == [[1, 3], [2, 2]]


@pytest.mark.parametrize("content, problem", [
    ("step,layer,expert,tokens\n0,0,0,1.5\n", "fractional token count at step 0, layer 0"),
    ("step,layer,expert,tokens\n0,0,0,-1\n", "negative token count"),
    ("step,layer,expert,tokens\n0,0,x,1\n", "'expert' must hold integers"),
    ("step,expert,tokens\n0,0,1\n", "missing column 'layer'"),
    ("step,layer,foo\n0,0,1\n", "neither long"),
    ("step,layer,e0\n0,0,a\n", "expert column 'e0' must hold token counts"),
    ("step,layer,expert,tokens\n0,0,0,1\n0,1,0,0\n", "step 0 has no tokens for layer 1"),
])
def test_csv_bad_input(tmp_path, content, problem):
    src = tmp_path / "bad.csv"
    src.write_text(content)
    with pytest.raises(TraceError, match=problem):
        import_trace("csv", src, tmp_path / "x.parquet")


# -- registry and CLI ----------------------------------------------------------------------

def test_registry_and_unknown_format(tmp_path):
    assert set(IMPORTERS) == {"megatron-tokens-per-expert", "megatron-router-trace", "sglang",
                              "trtllm", "flame-moe", "smartmoe", "csv"}
    with pytest.raises(ParameterError, match="unknown import format 'vllm'"):
        import_trace("vllm", tmp_path, tmp_path / "x.parquet")


def test_cli_imports_and_reports_errors_in_one_line(megatron_dir, tmp_path):
    out = tmp_path / "cli.parquet"
    result = runner.invoke(app, ["record", "--from", "megatron-router-trace",
                                 str(megatron_dir), "-o", str(out), "--experts", "8"])
    assert result.exit_code == 0, result.output
    assert "imported megatron-router-trace dump" in result.output
    assert read_trace(out).n_experts == 8
    bad = tmp_path / "bad.csv"
    bad.write_text("step,layer,expert,tokens\n0,0,0,-3\n")
    result = runner.invoke(app, ["record", "--from", "csv", str(bad), "-o",
                                 str(tmp_path / "y.parquet")])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "negative token count" in result.stderr
    result = runner.invoke(app, ["record", "--from", "csv", "-o", str(tmp_path / "z.parquet")])
    assert result.exit_code == 2 and "takes exactly one SRC" in result.stderr


def test_entry_point_imports_csv(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("step,layer,expert,tokens\n0,0,0,2\n0,0,1,2\n")
    out = tmp_path / "t.parquet"
    proc = subprocess.run([sys.executable, "-m", "moetrace", "record", "--from", "csv",
                           str(src), "-o", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert read_trace(out).loads().counts.tolist() == [[[2, 2]]]
    proc = subprocess.run([sys.executable, "-m", "moetrace", "record", "--from", "sglang",
                           str(tmp_path / "missing.pt"), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("moetrace: error:") and "no such file" in proc.stderr
