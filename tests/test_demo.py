"""The demo trainer: a real training (loss falls), counts equal the model's own routing,
deterministic per seed, and the committed real trace reads back as recorded data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import names
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.record.demo import learning_rate, stdlib_corpus, train_demo
from moetrace.record.demo_model import DemoConfig, TopKRouter, switch_aux_loss
from moetrace.trace import read_trace

SAMPLE = Path(__file__).resolve().parent.parent / "sample_traces" / "demo-real.parquet"


@pytest.fixture(scope="module")
def corpus():
    return stdlib_corpus(max_bytes=300_000)


def test_loss_goes_down(corpus):
    result = train_demo(None, steps=150, seed=0, corpus=corpus)
    assert result.path is None and result.losses.shape == (150,)
    assert result.losses[:10].mean() > 5.0  # about ln(256) = 5.55 before learning
    assert result.losses[-20:].mean() < result.losses[:10].mean() - 1.5


def test_recorded_counts_equal_the_routers_own_choices(tmp_path, corpus):
    """An independent tally of every router call's expert ids (a global torch hook)."""
    calls: list[np.ndarray] = []

    def tally(module, inputs, output):
        if isinstance(module, TopKRouter):
            calls.append(np.bincount(output[1].reshape(-1).numpy(), minlength=module.n_experts))

    handle = torch.nn.modules.module.register_module_forward_hook(tally)
    try:
        out = tmp_path / "demo"
        cfg = DemoConfig()
        train_demo(out, steps=25, seed=3, corpus=corpus, flush_every=10)
    finally:
        handle.remove()
    assert names(out / "rank=0") == [
        "part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    trace = read_trace(out)
    loads = trace.loads()
    assert (trace.n_layers, trace.n_experts, trace.n_steps) == (cfg.n_layers, cfg.n_experts, 25)
    # routers run in layer order, n_layers calls per step (no eval, no recomputation here)
    want = np.array(calls).reshape(25, cfg.n_layers, cfg.n_experts).transpose(1, 0, 2)
    assert np.array_equal(loads.counts, want)
    assert (loads.totals == cfg.tokens_per_step * cfg.top_k).all()
    meta = trace.metadata
    assert meta.source == "recorded" and meta.top_k == cfg.top_k
    assert meta.tokens_per_step == cfg.tokens_per_step


def test_deterministic_per_seed_and_parquet_output(tmp_path, corpus):
    a = train_demo(tmp_path / "a.parquet", steps=12, seed=1, corpus=corpus)
    b = train_demo(tmp_path / "b.parquet", steps=12, seed=1, corpus=corpus)
    c = train_demo(tmp_path / "c.parquet", steps=12, seed=2, corpus=corpus)
    counts = [read_trace(r.path).loads().counts for r in (a, b, c)]
    assert np.array_equal(counts[0], counts[1]) and np.array_equal(a.losses, b.losses)
    assert not np.array_equal(counts[0], counts[2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.parquet",
                                                           "c.parquet"]  # no parts left over
    assert "rank" not in read_trace(a.path).metadata.extra


def test_switch_aux_loss_is_one_when_balanced_and_e_when_collapsed():
    n_experts = 4
    uniform = torch.full((8, n_experts), 1 / n_experts)
    balanced_ids = torch.arange(8).remainder(n_experts)[:, None]
    assert switch_aux_loss(uniform, balanced_ids, n_experts).item() == pytest.approx(1.0)
    collapsed = torch.zeros(8, n_experts)
    collapsed[:, 0] = 1.0
    assert switch_aux_loss(collapsed, torch.zeros(8, 1, dtype=torch.long),
                           n_experts).item() == pytest.approx(n_experts)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    assert learning_rate(0, 3000, 1.0) == pytest.approx(0.01)
    assert learning_rate(99, 3000, 1.0) == pytest.approx(1.0)
    assert learning_rate(2999, 3000, 1.0) == pytest.approx(0.1, abs=1e-5)
    assert learning_rate(0, 20, 1.0) == pytest.approx(0.5)  # warm-up is a tenth of short runs


def test_cli_demo(tmp_path, monkeypatch, corpus):
    monkeypatch.setattr("moetrace.record.demo.stdlib_corpus", lambda: corpus)
    out = tmp_path / "cli.parquet"
    result = CliRunner().invoke(app, ["record", "--demo", "-o", str(out), "--steps", "15",
                                      "--seed", "4"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "recorded demo trace" in said and "15 steps x 4 MoE layers x 8 experts" in said
    assert read_trace(out).n_steps == 15
    result = CliRunner().invoke(app, ["record", "--demo", "-o", str(out), "--steps", "0"])
    assert result.exit_code == 2 and "--steps must be at least 1" in result.stderr


def test_committed_real_trace():
    """sample_traces/demo-real.parquet: a few thousand real steps whose loads settle."""
    trace = read_trace(SAMPLE)
    meta = trace.metadata
    assert meta.source == "recorded" and meta.model == "moetrace-demo-moe-gpt"
    assert trace.n_steps >= 2000 and not trace.gaps
    loads = trace.loads()
    assert (loads.totals == meta.tokens_per_step * meta.top_k).all()
    # the router settles: shares move less between steps late in training than early
    moves = np.abs(np.diff(loads.shares, axis=1)).mean(axis=(0, 2))
    assert moves[-500:].mean() < moves[:200].mean()
    assert SAMPLE.stat().st_size < 1_000_000
