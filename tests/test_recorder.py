"""TraceRecorder: per-step sums, part files, ranks, the counting rule and crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from conftest import leftovers, names

from moetrace.errors import OutputExistsError, ParameterError
from moetrace.record import Reader, TraceRecorder, attach, eval_dir, from_indices
from moetrace.trace import TraceMetadata, read_trace


def _ids(*values: int) -> torch.Tensor:
    return torch.tensor(values)


def test_micro_batches_add_up_into_one_step_and_read_back(tmp_path):
    with TraceRecorder(tmp_path / "t", flush_every=10) as rec:
        rec.add_indices(0, _ids(0, 1, 1, 3), 4)  # micro-batch 1
        rec.add_indices(0, _ids(3, 3), 4)  # micro-batch 2 of the same step
        rec.add_counts(1, torch.tensor([5, 0, 1, 0]))
        rec.add_counts(1, torch.tensor([1, 1, 1, 1]))
        rec.step()
        rec.add_indices(0, torch.tensor([[2, 2], [2, 0]]), 4)  # tokens x top-k ids
        rec.add_counts(1, torch.tensor([0, 0, 0, 4]))
        rec.step()
    trace = read_trace(tmp_path / "t")
    assert trace.steps.tolist() == [0, 1]
    counts = trace.loads().counts
    assert counts[0].tolist() == [[1, 2, 0, 3], [1, 0, 3, 0]]
    assert counts[1].tolist() == [[6, 1, 2, 1], [0, 0, 0, 4]]
    assert trace.metadata.source == "recorded"
    assert (trace.metadata.n_layers, trace.metadata.n_experts) == (2, 4)


def test_a_part_file_every_flush_every_steps_each_readable(tmp_path):
    out = tmp_path / "t"
    rec = TraceRecorder(out, flush_every=2, rank=0)
    for step in range(5):
        rec.add_indices(0, _ids(step % 3), 3)
        rec.step()
        parts = sorted((out / "rank=0").glob("part-*.parquet"))
        assert len(parts) == (step + 1) // 2  # only complete parts on disk, no temp files left
        if parts:
            assert read_trace(parts[-1]).n_steps == 2
    assert leftovers(out / "rank=0") == []
    rec.close()
    rec.close()  # idempotent
    parts = sorted((out / "rank=0").glob("part-*.parquet"))
    assert [p.name for p in parts] == ["part-000000.parquet", "part-000001.parquet",
                                       "part-000002.parquet"]
    assert [read_trace(p).steps.tolist() for p in parts] == [[0, 1], [2, 3], [4]]
    counts = read_trace(out).loads().counts[0]
    assert counts.argmax(axis=1).tolist() == [0, 1, 2, 0, 1]


def test_a_step_with_nothing_counted_is_no_step(tmp_path):
    with TraceRecorder(tmp_path / "t") as rec:
        rec.step()
        rec.add_indices(0, _ids(1), 2)
        rec.step()
        rec.step()  # an explicit call right after the optimizer hook: no empty step
        rec.add_indices(0, _ids(0), 2)
    assert rec.steps_recorded == 2  # close() counted the pending partial step
    assert read_trace(tmp_path / "t").loads().counts[0].tolist() == [[0, 1], [1, 0]]


def test_ranks_from_the_environment_are_summed_by_the_reader(tmp_path, monkeypatch):
    out = tmp_path / "t"
    for rank, ids in ((0, _ids(0, 0, 1)), (1, _ids(1, 1, 1))):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        with TraceRecorder(out, metadata=TraceMetadata(top_k=1)) as rec:
            rec.add_indices(0, ids, 2)
            rec.step()
        assert rec.rank == rank
    assert names(out) == ["rank=0", "rank=1"]
    trace = read_trace(out)
    assert trace.has_rank
    assert trace.loads().counts[0].tolist() == [[2, 4]]
    assert trace.metadata.tokens_per_step == 6  # 3 tokens on rank 0, times 2 ranks


@pytest.mark.parametrize("variable", ["RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK"])
def test_rank_variables_of_the_usual_launchers(tmp_path, monkeypatch, variable):
    for name in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "5")
    assert TraceRecorder(tmp_path / "t").rank == 5


def test_bad_settings_and_existing_parts_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ParameterError, match="flush_every"):
        TraceRecorder(tmp_path / "t", flush_every=0)
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ParameterError, match="RANK='two'"):
        TraceRecorder(tmp_path / "t")
    monkeypatch.delenv("RANK")
    with TraceRecorder(tmp_path / "t") as rec:
        rec.add_indices(0, _ids(0), 1)
    with pytest.raises(OutputExistsError, match="rank=0"):
        TraceRecorder(tmp_path / "t")
    with pytest.raises(ParameterError, match="closed"):
        rec.add_indices(0, _ids(0), 1)
    assert rec.counter_for(True) is None  # hooks left on a model count nothing, and do not fail


class ToyRouter(nn.Module):
    """Top-1 routing by a linear layer; remembers the ids of every call."""

    def __init__(self, dim: int, n_experts: int):
        super().__init__()
        self.proj = nn.Linear(dim, n_experts)
        self.calls: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.proj(x).argmax(dim=-1)
        self.calls.append(ids)
        return ids


class ToyMoE(nn.Module):
    """A top-1 MoE layer: a router and one linear expert per expert id."""

    def __init__(self, dim: int = 8, n_experts: int = 4):
        super().__init__()
        self.router = ToyRouter(dim, n_experts)
        self.experts = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = self.router(x)
        out = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            out[ids == e] = expert(x[ids == e])
        return out


TOY_READER: Reader = from_indices(lambda m, i, o: o, n_experts=4)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_recomputation_under_checkpointing_is_not_counted(tmp_path, use_reentrant):
    torch.manual_seed(0)
    moe = ToyMoE()
    rec = TraceRecorder(tmp_path / "t")
    handle = attach(moe, rec, modules={ToyRouter: TOY_READER})
    x = torch.randn(10, 8, requires_grad=True)
    checkpoint(moe, x, use_reentrant=use_reentrant).sum().backward()
    assert len(moe.router.calls) == 2  # routed twice: the forward, then the recomputation
    rec.close()
    handle.remove()
    expected = np.bincount(moe.router.calls[0].numpy(), minlength=4)
    assert read_trace(tmp_path / "t").loads().counts[0, 0].tolist() == expected.tolist()


def test_eval_forwards_are_skipped_or_recorded_separately(tmp_path):
    torch.manual_seed(0)
    moe = ToyMoE()
    opt = torch.optim.SGD(moe.parameters(), lr=0.0)
    x = torch.randn(12, 8)
    train_ids = moe.router(x)
    expected_train = np.bincount(train_ids.numpy(), minlength=4)
    for count_eval in (False, True):
        out = tmp_path / f"eval-{count_eval}"
        rec = TraceRecorder(out, count_eval=count_eval)
        handle = attach(moe, rec, modules={"ToyRouter": TOY_READER})
        moe.train()
        moe(x).sum().backward()
        opt.step()  # the optimizer hook ends step 0
        with torch.no_grad():
            moe(x)  # no grad in training mode: an eval pass
        moe.eval()
        moe(x[:3])  # eval mode
        moe.train()
        moe(x).sum().backward()
        opt.step()  # step 1
        rec.close()
        handle.remove()
        trace = read_trace(out)
        assert trace.loads().counts[0].tolist() == [expected_train.tolist()] * 2
        if count_eval:
            evals = read_trace(eval_dir(out))
            assert evals.steps.tolist() == [1]  # the eval ran after 1 completed training step
            assert evals.loads().counts[0, 0].sum() == 12 + 3
            assert evals.metadata.extra["phase"] == "eval"
        else:
            assert not eval_dir(out).exists()


def test_attach_finds_user_modules_in_order_and_steps_on_the_optimizer(tmp_path):
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": ToyMoE(), "b": nn.Linear(8, 8), "c": ToyMoE()})
    rec = TraceRecorder(tmp_path / "t", flush_every=1)
    handle = attach(model, rec, modules={ToyRouter: TOY_READER})
    assert [(x.layer, x.name, x.kind) for x in handle.layers] == [(0, "a.router", "user"),
                                                                  (1, "c.router", "user")]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 8)
    ids_a, ids_c = model["a"].router(x), model["c"].router(x)
    opt.step()
    assert read_trace(tmp_path / "t").loads().counts[:, 0].tolist() == [
        np.bincount(ids_a.numpy(), minlength=4).tolist(),
        np.bincount(ids_c.numpy(), minlength=4).tolist()]
    handle.remove()
    model["a"](x)
    opt.step()  # hooks and the optimizer hook are gone: nothing more is counted
    rec.close()
    assert read_trace(tmp_path / "t").n_steps == 1
    with pytest.raises(ParameterError, match="no MoE layer found in Linear"):
        attach(nn.Linear(2, 2), rec)


_CRASHING_TRAINER = textwrap.dedent("""
    import os, signal, sys, torch
    from moetrace.record import TraceRecorder
    rec = TraceRecorder(sys.argv[1], flush_every=3, rank=0)
    for step in range(100):
        rec.add_indices(0, torch.tensor([step % 4] * (step + 1)), 4)
        rec.step()
        if step == 7:
            os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_process_leaves_a_readable_trace_missing_only_unflushed_steps(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(_CRASHING_TRAINER)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "t")])
    assert result.returncode == -signal.SIGKILL
    trace = read_trace(tmp_path / "t")
    assert trace.steps.tolist() == [0, 1, 2, 3, 4, 5]  # steps 6 and 7 were not flushed yet
    counts = trace.loads().counts[0]
    assert counts.sum(axis=1).tolist() == [1, 2, 3, 4, 5, 6]
    assert counts.argmax(axis=1).tolist() == [0, 1, 2, 3, 0, 1]
    assert leftovers(tmp_path / "t" / "rank=0") == []
    assert names(tmp_path / "t") == ["rank=0"]
