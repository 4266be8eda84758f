"""The recorder under faults: a real model trains every step while its trace directory fails.

A tiny transformers Mixtral trains with ``attach()``; the trace directory fails in the ways a
full disk, a careless user or a vanished mount do. Training must finish every step, the parts
written stay readable, the recorder warns once naming the path and says how many steps were
lost. Launcher variables and a second writer are refused before training starts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

transformers = pytest.importorskip("transformers")

from moetrace.errors import OutputError, OutputExistsError, ParameterError  # noqa: E402
from moetrace.record import TraceRecorder, attach  # noqa: E402
from moetrace.trace import read_trace  # noqa: E402

STEPS = 20


def _model():
    cfg = transformers.MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=32,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, num_local_experts=8,
                                     num_experts_per_tok=2)
    torch.manual_seed(0)
    return transformers.MixtralForCausalLM(cfg)


def train(out, fault=None, at=10, steps=STEPS, flush_every=2):
    """Train ``steps`` steps recording into ``out``; ``fault(out)`` runs before step ``at``.
    Returns (steps trained, recorder, warnings raised)."""
    model = _model()
    rec = TraceRecorder(out, flush_every=flush_every, rank=0)
    handle = attach(model, rec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    done = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(steps):
            if step == at and fault is not None:
                fault(out)
            ids = torch.randint(0, 64, (2, 5))
            model(ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
            done += 1
        rec.close()
    handle.remove()
    return done, rec, [str(w.message) for w in caught if "moetrace" in str(w.message)]


def test_a_file_in_place_of_the_directory(tmp_path):
    def replace_with_file(out):
        shutil.rmtree(out)
        out.write_text("not a directory")

    done, rec, messages = train(tmp_path / "t", replace_with_file)
    assert done == STEPS
    assert rec.steps_lost == 10  # steps 10..19 had nowhere to go
    assert sum("cannot write" in m for m in messages) == 1  # warned once, not every flush
    assert any("10 recorded step(s) could not be written" in m for m in messages)
    assert (tmp_path / "t").read_text() == "not a directory"


def test_the_directory_removed_mid_run_is_made_again(tmp_path):
    done, rec, messages = train(tmp_path / "t", lambda out: shutil.rmtree(out))
    assert done == STEPS and rec.steps_lost == 0
    trace = read_trace(tmp_path / "t")
    assert trace.steps.tolist() == list(range(10, 20))  # what was written after the removal


def test_writes_failing_then_working_again_lose_nothing(tmp_path, monkeypatch):
    import moetrace.record.recorder as recorder

    real = recorder.write_layer_groups
    state = {"fail": False}

    def flaky(*args, **kwargs):
        if state["fail"]:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(recorder, "write_layer_groups", flaky)
    model = _model()
    rec = TraceRecorder(tmp_path / "t", flush_every=2, rank=0)
    handle = attach(model, rec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(16):
            state["fail"] = 4 <= step < 10  # the disk is full for six steps
            ids = torch.randint(0, 64, (2, 5))
            model(ids, labels=ids).loss.backward()
            opt.step()
            opt.zero_grad()
        rec.close()
    handle.remove()
    messages = [str(w.message) for w in caught]
    assert rec.steps_lost == 0  # buffered while failing, written once the disk was back
    assert any("No space left on device" in m for m in messages)
    assert any("works again" in m for m in messages)
    assert read_trace(tmp_path / "t").steps.tolist() == list(range(16))


_FSIZE_TRAINER = textwrap.dedent("""
    import resource, sys, warnings
    import torch, transformers
    from moetrace.record import TraceRecorder, attach
    cfg = transformers.MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=32,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, num_local_experts=8,
                                     num_experts_per_tok=2)
    torch.manual_seed(0)
    model = transformers.MixtralForCausalLM(cfg)
    rec = TraceRecorder(sys.argv[1], flush_every=2, rank=0)
    attach(model, rec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(20):
        if step == 10:  # as a full disk or a quota would: every further write fails
            resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        ids = torch.randint(0, 64, (2, 5))
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    rec.close()
    print("trained", step + 1, "lost", rec.steps_lost)
""")


def test_a_file_size_limit_mid_run_never_reaches_the_training_loop(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_FSIZE_TRAINER)
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "t")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "trained 20 lost 10" in run.stdout
    assert run.stderr.count("File too large") == 1  # one warning naming the reason
    assert str(tmp_path / "t" / "rank=0") in run.stderr
    trace = read_trace(tmp_path / "t")  # the parts written before stay readable
    assert trace.steps.tolist() == list(range(10))


@pytest.mark.parametrize("env, problem", [
    ({"RANK": "2147483648", "WORLD_SIZE": "4"}, "RANK=2147483648: a rank must be between 0"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE=0: the world size must be at least 1"),
    ({"RANK": "0", "WORLD_SIZE": "-2"}, "WORLD_SIZE=-2: the world size must be at least 1"),
    ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK=4 is not below WORLD_SIZE=4"),
    ({"RANK": "-1"}, "RANK=-1: a rank must be between 0"),
])
def test_launcher_variables_are_checked_before_training(tmp_path, monkeypatch, env, problem):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ParameterError, match=problem):
        TraceRecorder(tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_two_recorders_on_one_rank_directory_never_overwrite_each_other(tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    first = TraceRecorder(tmp_path / "t", flush_every=1, rank=0)
    with pytest.raises(OutputError, match=r"another recorder \(pid \d+ on .*\) is writing"):
        TraceRecorder(tmp_path / "t", flush_every=1, rank=0)
    first.add_indices(0, torch.tensor([0, 1, 1]), 2)
    first.step()
    first.close()
    with pytest.raises(OutputExistsError, match="append"):
        TraceRecorder(tmp_path / "t", rank=0)
    resumed = TraceRecorder(tmp_path / "t", flush_every=1, rank=0, append=True, first_step=1)
    resumed.add_indices(0, torch.tensor([0]), 2)
    resumed.close()
    trace = read_trace(tmp_path / "t")
    assert trace.steps.tolist() == [0, 1]
    assert trace.loads().counts[0].tolist() == [[1, 2], [1, 0]]


def test_a_stale_lock_of_a_killed_recorder_is_taken_over(tmp_path):
    script = ("import os, signal, sys, torch\n"
              "from moetrace.record import TraceRecorder\n"
              "rec = TraceRecorder(sys.argv[1], flush_every=1, rank=0)\n"
              "rec.add_indices(0, torch.tensor([0]), 2); rec.step()\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "t")], timeout=120)
    assert (tmp_path / "t" / "rank=0" / ".lock").exists()
    rec = TraceRecorder(tmp_path / "t", rank=0, append=True, first_step=1)  # not refused
    rec.close()


def test_a_file_system_without_locks_records_unprotected_with_a_warning(tmp_path,
                                                                         monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match="cannot lock .*No locks available.*recording "
                                            "without protection"):
        rec = TraceRecorder(tmp_path / "t", flush_every=1, rank=0)
    rec.add_indices(0, torch.tensor([0, 1]), 2)
    rec.close()
    assert read_trace(tmp_path / "t").loads().counts[0].tolist() == [[1, 1]]


def test_a_hook_that_cannot_read_its_module_skips_the_layer_and_training_goes_on(tmp_path):
    from torch import nn

    from moetrace.record import from_indices

    class Router(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 3)

        def forward(self, x):
            return self.proj(x).argmax(-1)

    model = nn.ModuleList([Router(), Router(), Router()])
    readers = {Router: from_indices(lambda m, i, o: o, n_experts=3)}
    rec = TraceRecorder(tmp_path / "t", flush_every=2, rank=0)
    handle = attach(model, rec, modules=readers)
    broken = handle.layers[1]
    assert broken.layer == 1
    model[1].forward = lambda x: ("not", "ids")  # layer 1 returns nothing countable
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="not recording MoE layer 1"):
        for _ in range(4):
            x = torch.randn(5, 4)
            loss = sum(m.proj(x).sum() for m in model)
            for m in model:
                m(x)
            loss.backward()
            opt.step()
    rec.close()
    handle.remove()
    trace = read_trace(tmp_path / "t")
    assert trace.n_layers == 2 and trace.n_steps == 4  # layers 0 and 2, renumbered 0 and 1
    assert trace.metadata.extra["skipped_layers"][0]["layer"] == 1
    assert (trace.loads().totals == 5).all()


def test_old_deepspeed_top2_counts_are_refused_in_one_line(monkeypatch):
    deepspeed = pytest.importorskip("deepspeed")
    from deepspeed.moe.sharded_moe import TopKGate

    gate = TopKGate(8, 4, k=2)
    monkeypatch.setattr(deepspeed, "__version__", "0.13.5")
    with pytest.raises(ParameterError, match=r"first choice of top-2 in exp_counts \(fixed in "
                                             r"0.14\)"):
        attach(torch.nn.ModuleList([gate]), TraceRecorder.__new__(TraceRecorder))
    monkeypatch.setattr(deepspeed, "__version__", "0.14.0")
    from moetrace.record.adapters import deepspeed as adapter
    assert adapter.match(gate) is not None
    assert adapter.version_tuple("0.9.1") < adapter.FIRST_COMPLETE <= \
        adapter.version_tuple("0.19.8+cpu")
