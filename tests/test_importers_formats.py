"""Importers of the formats training and serving frameworks write: Megatron-LM tokens per
expert, SGLang per-pass records and --init-expert-location JSON, TensorRT-LLM expert
statistics, FLAME-MoE routing traces. Each fixture is written the way the upstream writer
writes it (the function named in each section); counts are checked against plain counting."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import save_file
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.errors import ParameterError, TraceError
from moetrace.record.importers import import_trace
from moetrace.trace import read_trace

runner = CliRunner()


def _loads(path):
    trace = read_trace(path)
    return trace, trace.loads()


# -- Megatron-LM tokens_per_expert/rank{R}.jsonl (ActivationLogger.save_tpe) ----------------

def _save_tpe(save_dir, rank, iteration, records):
    """Append as save_tpe does: one line per decoder layer, sorted by layer."""
    tpe_dir = save_dir / "tokens_per_expert"
    tpe_dir.mkdir(parents=True, exist_ok=True)
    with open(tpe_dir / f"rank{rank}.jsonl", "a") as f:
        for layer, microbatches in sorted(records.items()):
            f.write(json.dumps({"iter": iteration, "block": "decoder", "layer": layer,
                                "tpe": microbatches}) + "\n")


def _tpe_run(save_dir, *, world, local, layers, iters, seed=0, micro=2):
    """Random per-rank local counts; returns tpe[rank][iter][layer] = [[counts]*micro]."""
    rng = np.random.default_rng(seed)
    data = {}
    for rank in range(world):
        for it in iters:
            records = {layer: rng.integers(0, 50, size=(micro, local)).tolist()
                       for layer in layers}
            data.setdefault(rank, {})[it] = records
            _save_tpe(save_dir, rank, it, records)
    return data


def test_megatron_tpe_maps_local_experts_and_sums_replicas(tmp_path):
    # 4 ranks, 8 experts, 4 local each: ep=2, two expert data-parallel replicas
    data = _tpe_run(tmp_path / "run", world=4, local=4, layers=[1, 3], iters=[10, 20, 30])
    trace, loads = _loads(import_trace("megatron-tokens-per-expert", tmp_path / "run",
                                       tmp_path / "t.parquet", n_experts=8))
    assert (trace.n_layers, trace.n_experts, list(loads.steps)) == (2, 8, [10, 20, 30])
    for li, layer in enumerate([1, 3]):
        for si, it in enumerate([10, 20, 30]):
            want = np.zeros(8, dtype=int)
            for rank in range(4):
                ep_rank = rank % 2  # rank = ep_rank + 2 * edp_rank
                want[ep_rank * 4:(ep_rank + 1) * 4] += np.sum(data[rank][it][layer], axis=0)
            assert loads.counts[li, si].tolist() == want.tolist()
    meta = trace.metadata.extra
    assert meta["layout"] == {"etp": 1, "ep": 2, "pp": 1, "edp": 2}
    assert meta["source_layers"] == [1, 3] and "training iterations" in meta["steps_are"]
    assert trace.interval == 10  # iterations saved every 10: a sampled trace


def test_megatron_tpe_pipeline_stages_and_expert_tensor_parallel(tmp_path):
    pp = tmp_path / "pp"
    data = _tpe_run(pp, world=4, local=4, layers=[0, 1], iters=[5], seed=1)
    trace, loads = _loads(import_trace("megatron-tokens-per-expert", pp / "tokens_per_expert",
                                       tmp_path / "pp.parquet", n_experts=8, layout="pp=2"))
    # ranks 0,1: stage 0 (ep 0, 1); ranks 2,3: stage 1 -> its layers 0, 1 are 1000, 1001
    assert trace.metadata.extra["source_layers"] == [0, 1, 1000, 1001]
    assert loads.counts[2, 0, 4:].tolist() == np.sum(data[3][5][0], axis=0).tolist()
    etp = tmp_path / "etp"
    data = _tpe_run(etp, world=4, local=4, layers=[2], iters=[1], seed=2)
    _, loads = _loads(import_trace("megatron-tokens-per-expert", etp, tmp_path / "e.parquet",
                                   n_experts=8, layout={"etp": 2}))
    # ranks 1 and 3 repeat the tokens of ranks 0 and 2 (same etp group): not counted again
    want = np.concatenate([np.sum(data[0][1][2], axis=0), np.sum(data[2][1][2], axis=0)])
    assert loads.counts[0, 0].tolist() == want.tolist()


@pytest.mark.parametrize("change, error, problem", [
    (lambda d: None, ParameterError, "needs --experts"),
    (lambda d: (d / "rank1.jsonl").unlink(), TraceError, "rank file\\(s\\) missing: rank1"),
    (lambda d: (d / "rank0.jsonl").write_text(
        '{"iter": 1, "block": "decoder", "layer": 1, "tpe": [[1, 2, 3, 4]]}\n'
        '{"iter": 1, "block": "decoder", "layer": 3, "tpe": [[1, 2, 3, 4], [1, 1, 1, 1]]}\n'),
     TraceError, "iteration 1, layer 1: 1 micro-batch\\(es\\) where another layer has 2"),
    (lambda d: (d / "rank0.jsonl").write_text(
        (d / "rank0.jsonl").read_text() * 2), TraceError, "appears in 2 lines"),
    (lambda d: (d / "rank2.jsonl").write_text(
        '{"iter": 1, "block": "decoder", "layer": 1, "tpe": [[1, 2]]}\n'),
     TraceError, "2 local experts per row, but rank0.jsonl has 4"),
    (lambda d: (d / "rank0.jsonl").write_text('{"iter": 1, "layer": 1, "tpe": "x"}\n'),
     TraceError, "not Megatron tokens_per_expert lines"),
])
def test_megatron_tpe_bad_input(tmp_path, change, error, problem):
    _tpe_run(tmp_path / "run", world=4, local=4, layers=[1, 3], iters=[1])
    change(tmp_path / "run" / "tokens_per_expert")
    experts = None if error is ParameterError else 8
    with pytest.raises(error, match=problem):
        import_trace("megatron-tokens-per-expert", tmp_path / "run", tmp_path / "x.parquet",
                     n_experts=experts)
    assert not (tmp_path / "x.parquet").exists()


def test_megatron_tpe_layout_checks(tmp_path):
    _tpe_run(tmp_path / "run", world=4, local=4, layers=[1], iters=[1])
    for experts, layout, problem in [(6, None, "not give a whole expert-parallel size"),
                                     (8, "ep=4", "--layout ep=4 but --experts 8"),
                                     (8, "pp=3", "do not split into etp=1 x ep=2 x pp=3"),
                                     (8, "tp=2", "--layout tp means nothing to --from "
                                                 "megatron-tokens-per-expert"),
                                     (8, "pp=x", "KEY=SIZE pairs")]:
        with pytest.raises(ParameterError, match=problem):
            import_trace("megatron-tokens-per-expert", tmp_path / "run",
                         tmp_path / "x.parquet", n_experts=experts, layout=layout)


# -- SGLang per_token dumps (_DetailAccumulator.dump) and the --init-expert-location JSON ---

def _sglang_per_token(path, rank, passes, mapping):
    """{records: [...], last_physical_to_logical_map} as _DetailAccumulator.dump saves it."""
    records = [dict(forward_pass_id=pid, rank=rank, gatherer_key="primary",
                    input_ids=[1, 2], positions=[0, 1], extend_seq_lens=[2], forward_mode=1,
                    topk_ids_of_layer=torch.zeros(2, 2, 8, dtype=torch.int32),
                    misc_objects=[], global_physical_count=torch.tensor(count))
               for pid, count in passes]
    torch.save(dict(records=records, last_physical_to_logical_map=torch.tensor(mapping)), path)


def test_sglang_per_pass_records_map_physical_to_logical_and_sum_ranks(tmp_path):
    # 2 layers, 3 logical experts, 4 physical: physical 3 replicates logical 0 (layer 0)
    # and logical 2 (layer 1)
    mapping = [[0, 1, 2, 0], [0, 1, 2, 2]]
    rng = np.random.default_rng(3)
    counts = {(rank, pid): rng.integers(0, 20, size=(2, 4)) for rank in (0, 1)
              for pid in (7, 8, 9)}
    (tmp_path / "dumps").mkdir()
    for rank in (0, 1):
        _sglang_per_token(tmp_path / "dumps" / f"expert_distribution_recorder_1700000000.5_{rank}.pt",
                          rank, [(pid, counts[rank, pid].tolist()) for pid in (7, 8, 9)],
                          mapping)
    trace, loads = _loads(import_trace("sglang", tmp_path / "dumps", tmp_path / "s.parquet"))
    assert list(loads.steps) == [7, 8, 9] and trace.n_experts == 3
    for si, pid in enumerate((7, 8, 9)):
        phys = counts[0, pid] + counts[1, pid]
        assert loads.counts[0, si].tolist() == [phys[0, 0] + phys[0, 3], phys[0, 1], phys[0, 2]]
        assert loads.counts[1, si].tolist() == [phys[1, 0], phys[1, 1], phys[1, 2] + phys[1, 3]]
    assert "forward passes" in trace.metadata.extra["steps_are"]


def test_sglang_init_expert_location_json(tmp_path):
    src = tmp_path / "logical_count.json"
    src.write_text(json.dumps({"logical_count": [[3, 1, 0, 4], [2, 2, 2, 2]]}))
    trace, loads = _loads(import_trace("sglang", src, tmp_path / "j.parquet", top_k=2))
    assert loads.counts[:, 0].tolist() == [[3, 1, 0, 4], [2, 2, 2, 2]]
    assert trace.metadata.extra["steps_are"] == "one count over the whole recording"
    assert trace.metadata.tokens_per_step == 4  # 8 choices / top-2
    src.write_text(json.dumps({"physical_to_logical_map": [[0, 1]]}))
    with pytest.raises(TraceError, match="a placement"):
        import_trace("sglang", src, tmp_path / "k.parquet")
    src.write_text(json.dumps({"logical_count": [[1, 2], [3]]}))
    with pytest.raises(TraceError, match="ragged"):
        import_trace("sglang", src, tmp_path / "k.parquet")


def test_sglang_per_pass_bad_records(tmp_path):
    src = tmp_path / "expert_distribution_recorder_1_0.pt"
    _sglang_per_token(src, 0, [(1, [[1, 2, 3]])], [[0, 1]])
    with pytest.raises(TraceError, match="1 layers x 3 physical experts but the map is 1 x 2"):
        import_trace("sglang", src, tmp_path / "x.parquet")
    torch.save({"records": [{"rank": 0}], "last_physical_to_logical_map": torch.zeros(1, 2)},
               src)
    with pytest.raises(TraceError, match="lacks forward_pass_id or global_physical_count"):
        import_trace("sglang", src, tmp_path / "x.parquet")


# -- TensorRT-LLM rank{R}.safetensors + meta_info.json (ExpertStatistic._set_iter) ---------

def _trtllm_rank(path, rank, selected, n_experts=6, top_k=2):
    """selected[(iter, layer)] = token_selected_experts of each call; saved as upstream does."""
    records = {}
    for (it, layer), calls in selected.items():
        for call in calls:
            counts = torch.bincount(torch.tensor(call).flatten(), minlength=n_experts)
            key = f"{it}_{layer}"
            records[key] = counts if key not in records else records[key] + counts
    if rank == 0:
        (path / "meta_info.json").write_text(json.dumps(
            {"num_experts": n_experts, "num_experts_per_token": top_k}))
    save_file(records, str(path / f"rank{rank}.safetensors"))


def test_trtllm_sums_distinct_ranks_and_reads_once_the_repeated_ones(tmp_path):
    src = tmp_path / "stats"
    src.mkdir()
    a = {(3, 0): [[[0, 1], [1, 2]], [[5, 0]]], (3, 1): [[[2, 3], [3, 3]], [[4, 4]]],
         (4, 0): [[[1, 1], [0, 2]]], (4, 1): [[[5, 5], [0, 0]]]}
    b = {(3, 0): [[[2, 2]]], (3, 1): [[[1, 0]]], (4, 0): [[[3, 3]]], (4, 1): [[[4, 2]]]}
    _trtllm_rank(src, 0, a)
    _trtllm_rank(src, 1, a)  # attention TP: rank 1 routes the very same tokens
    _trtllm_rank(src, 2, b)  # attention DP: different tokens
    trace, loads = _loads(import_trace("trtllm", src, tmp_path / "t.parquet"))
    assert (trace.n_experts, trace.metadata.top_k, list(loads.steps)) == (6, 2, [3, 4])
    assert loads.counts[0, 0].tolist() == [2, 2, 3, 0, 0, 1]  # a's 0,1,1,2,5,0 + b's 2,2
    assert loads.counts[1, 1].tolist() == [2, 0, 1, 0, 1, 2]  # a's 5,5,0,0 + b's 4,2
    assert trace.metadata.extra["distinct_ranks"] == 2


def test_trtllm_bad_files(tmp_path):
    tmp_path = tmp_path / "stats"
    tmp_path.mkdir()
    save_file({"x_0": torch.zeros(4, dtype=torch.int64)}, str(tmp_path / "rank0.safetensors"))
    with pytest.raises(TraceError, match="key 'x_0' is not"):
        import_trace("trtllm", tmp_path, tmp_path.parent / "x.parquet")
    (tmp_path / "rank0.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(TraceError, match="rank0.safetensors: not a safetensors file"):
        import_trace("trtllm", tmp_path, tmp_path.parent / "x.parquet")
    save_file({"1_0": torch.zeros(4)}, str(tmp_path / "rank0.safetensors"))
    with pytest.raises(TraceError, match="counts must be integers"):
        import_trace("trtllm", tmp_path, tmp_path.parent / "x.parquet")


# -- FLAME-MoE actives/iter_NNNN/layer_NN.parquet ------------------------------------------

def _flame_layer(path, indices):
    """One layer file with the published schema: list<float16> scores, list<int16> indices."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scores = [[np.float16(1.0 / (i + 1)) for i in range(len(row))] for row in indices]
    table = pa.table({"scores": pa.array(scores, type=pa.list_(pa.float16())),
                      "indices": pa.array(indices, type=pa.list_(pa.int16()))})
    pq.write_table(table, path, row_group_size=3)


def test_flame_checkpoints_are_steps(tmp_path, monkeypatch):
    monkeypatch.setattr("moetrace.record.importers.flame.BATCH_ROWS", 2)  # several batches
    rng = np.random.default_rng(4)
    model = tmp_path / "flame-moe-290m"
    data = {}
    for it in (540, 1080):
        for layer in (2, 3):
            ids = [rng.choice(8, size=3, replace=False).tolist() for _ in range(7)]
            data[it, layer] = ids
            _flame_layer(model / "actives" / f"iter_{it:04d}" / f"layer_{layer:02d}.parquet",
                         ids)
    trace, loads = _loads(import_trace("flame-moe", model, tmp_path / "f.parquet",
                                       n_experts=8))
    assert list(loads.steps) == [540, 1080] and trace.metadata.top_k == 3
    assert trace.metadata.tokens_per_step == 7
    for (it, layer), ids in data.items():
        want = np.bincount(np.ravel(ids), minlength=8)
        assert loads.counts[layer - 2, [540, 1080].index(it)].tolist() == want.tolist()
    assert "checkpoints" in trace.metadata.extra["steps_are"]


def test_flame_bad_files(tmp_path):
    tmp_path = tmp_path / "model"
    bad = tmp_path / "actives" / "iter_0001" / "layer_02.parquet"
    _flame_layer(bad, [[1, 2], [3]])
    with pytest.raises(TraceError, match="layer_02.parquet: tokens differ"):
        import_trace("flame-moe", tmp_path, tmp_path.parent / "x.parquet")
    pq.write_table(pa.table({"scores": [[0.5]]}), bad)
    with pytest.raises(TraceError, match="no 'indices' column"):
        import_trace("flame-moe", tmp_path, tmp_path.parent / "x.parquet")
    bad.write_bytes(b"PAR1 nonsense")
    with pytest.raises(TraceError, match="not a Parquet file"):
        import_trace("flame-moe", tmp_path, tmp_path.parent / "x.parquet")
    with pytest.raises(TraceError, match="no actives/iter_N/layer_NN.parquet"):
        import_trace("flame-moe", bad, tmp_path.parent / "x.parquet")


# -- through the CLI ------------------------------------------------------------------------

def test_cli_layout_and_steps_are(tmp_path):
    _tpe_run(tmp_path / "run", world=2, local=2, layers=[1], iters=[1, 2])
    out = tmp_path / "m.parquet"
    result = runner.invoke(app, ["record", "--from", "megatron-tokens-per-expert",
                                 str(tmp_path / "run"), "-o", str(out), "--experts", "4",
                                 "--layout", "ep=2", "--steps-are", "iterations of run 7"])
    assert result.exit_code == 0, result.output
    assert read_trace(out).metadata.extra["steps_are"] == "iterations of run 7"
    result = runner.invoke(app, ["record", "--from", "megatron-tokens-per-expert",
                                 str(tmp_path / "run"), "-o", str(tmp_path / "n.parquet")])
    assert result.exit_code == 2 and "needs --experts" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    result = runner.invoke(app, ["record", "--simulate", "gpt3-125m", "--layout", "pp=2",
                                 "-o", str(tmp_path / "s.parquet")])
    assert result.exit_code == 2
    assert "--layout does not apply to --simulate PRESET (only to --from FORMAT SRC)" in \
        result.stderr


# -- corrupted files: a result or one clear error, never a crash -----------------------------

def _fixture(fmt, root):
    if fmt == "megatron-tokens-per-expert":
        _tpe_run(root, world=2, local=2, layers=[1], iters=[1, 2])
        return root / "tokens_per_expert" / "rank0.jsonl", {"n_experts": 4}
    if fmt == "sglang":
        root.mkdir()
        _sglang_per_token(root / "d_1_0.pt", 0, [(1, [[1, 2, 3]]), (2, [[3, 2, 1]])],
                          [[0, 1, 2]])
        return root / "d_1_0.pt", {}
    if fmt == "trtllm":
        root.mkdir()
        _trtllm_rank(root, 0, {(1, 0): [[[0, 1]]], (2, 0): [[[1, 1]]]})
        return root / "rank0.safetensors", {}
    layer = root / "actives" / "iter_0001" / "layer_02.parquet"
    _flame_layer(layer, [[0, 1], [2, 3], [1, 0]])
    return layer, {}


@pytest.mark.parametrize("fmt", ["megatron-tokens-per-expert", "sglang", "trtllm",
                                 "flame-moe"])
def test_corrupted_dumps_import_or_fail_in_one_line(tmp_path, fmt):
    from moetrace.errors import MoetraceError

    rng = np.random.default_rng(5)
    for trial in range(25):
        root = tmp_path / f"t{trial}"
        victim, kwargs = _fixture(fmt, root)
        data = bytearray(victim.read_bytes())
        if trial % 2:
            data = data[:int(rng.integers(0, len(data)))]
        else:
            for at in rng.integers(0, len(data), size=3):
                data[at] ^= 1 << int(rng.integers(0, 8))
        victim.write_bytes(bytes(data))
        out = tmp_path / f"o{trial}.parquet"
        try:
            import_trace(fmt, root if fmt != "sglang" else victim, out, **kwargs)
        except MoetraceError as exc:
            assert "\n" not in str(exc) and not out.exists()
        else:
            read_trace(out)
