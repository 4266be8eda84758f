"""`moetrace record -o DIR -- CMD`: recording a training command without editing it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import MOETRACE, names
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.record import autorecord
from moetrace.record.launch import SITECUSTOMIZE_DIR, child_env
from moetrace.trace import read_trace

runner = CliRunner()

#: A user's transformers training script; it also writes, per optimizer step, the counts the
#: model's own routing gives (top-k of its router logits), as JSON lines, to compare against.
TRAIN_MIXTRAL = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM

    steps, kill_at, expected_path, code = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                           int(sys.argv[4]))
    cfg = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=32,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                        num_local_experts=8, num_experts_per_tok=2)
    torch.manual_seed(0)
    model = MixtralForCausalLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with open(expected_path, "w") as expected:
        for step in range(steps):
            counts = torch.zeros(2, 8, dtype=torch.int64)
            for _ in range(2):  # gradient accumulation
                ids = torch.randint(0, 64, (2, 5))
                out = model(ids, labels=ids, output_router_logits=True)
                out.loss.backward()
                for layer, logits in enumerate(out.router_logits):
                    chosen = torch.topk(logits.detach(), 2, dim=-1).indices.reshape(-1)
                    counts[layer] += torch.bincount(chosen, minlength=8)
            opt.step()
            opt.zero_grad()
            expected.write(json.dumps(counts.tolist()) + "\\n")
            expected.flush()
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(code)
""")


def _expected(path) -> np.ndarray:
    """counts[layer, step, expert] from the script's JSON lines."""
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return np.asarray(rows, dtype=np.int64).transpose(1, 0, 2)


@pytest.mark.slow
def test_a_transformers_run_is_recorded_with_its_own_routing(tmp_path, monkeypatch):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_MIXTRAL)
    monkeypatch.setenv("RANK", "1")  # as torchrun would set it for the second process
    out, expected_path = tmp_path / "trace", tmp_path / "expected.jsonl"
    result = runner.invoke(app, ["record", "-o", str(out), "--flush-every", "2", "--",
                                 sys.executable, str(script), "5", "-1", str(expected_path),
                                 "3"])
    assert result.exit_code == 3, result.output  # the command's own exit status
    assert f"recorded trace {out}: 5 steps x 2 MoE layers x 8 experts" in result.output
    assert "MixtralForCausalLM" in result.output
    assert names(out) == ["rank=1"]
    trace = read_trace(out)
    np.testing.assert_array_equal(trace.loads().counts, _expected(expected_path))
    assert trace.metadata.top_k == 2 and trace.metadata.model == "MixtralForCausalLM"


@pytest.mark.slow
def test_a_killed_run_leaves_a_readable_trace_missing_only_unflushed_steps(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN_MIXTRAL)
    out, expected_path = tmp_path / "trace", tmp_path / "expected.jsonl"
    result = subprocess.run([str(MOETRACE), "record", "-o", str(out), "--flush-every", "3",
                             "--", sys.executable, str(script), "20", "7",
                             str(expected_path), "0"], capture_output=True, text=True)
    assert result.returncode == 128 + 9, result.stderr  # SIGKILL, as a shell reports it
    assert "exited with status 137" in result.stderr
    assert "recorded trace" in result.stdout and "6 steps" in result.stdout
    expected = _expected(expected_path)
    assert expected.shape[1] == 8  # the script finished steps 0..7 before it was killed
    trace = read_trace(out)
    assert trace.steps.tolist() == [0, 1, 2, 3, 4, 5]  # two parts; steps 6, 7 unflushed
    np.testing.assert_array_equal(trace.loads().counts, expected[:, :6])


def test_child_environment_keeps_the_users_pythonpath(tmp_path):
    env = child_env(tmp_path / "t", flush_every=7, count_eval=True,
                    base={"PYTHONPATH": f"/a{os.pathsep}/b", "HOME": "/h"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(SITECUSTOMIZE_DIR), "/a", "/b"]
    assert env["MOETRACE_RECORD_DIR"] == str((tmp_path / "t").resolve())
    assert (env["MOETRACE_RECORD_FLUSH_EVERY"], env["MOETRACE_RECORD_COUNT_EVAL"]) == ("7", "1")
    assert env["HOME"] == "/h"


def test_the_users_sitecustomize_still_runs_and_exit_codes_pass_through(tmp_path, monkeypatch):
    user_dir = tmp_path / "site"
    user_dir.mkdir()
    marker = tmp_path / "marker"
    (user_dir / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    monkeypatch.setenv("PYTHONPATH", str(user_dir))
    result = runner.invoke(app, ["record", "-o", str(tmp_path / "t"), "--", sys.executable,
                                 "-c", "import sys; sys.exit(5)"])
    assert result.exit_code == 5
    assert marker.read_text() == "ran"
    assert "no MoE layer was recorded" in result.output
    assert not (tmp_path / "t").exists()


def test_bad_commands_and_existing_outputs_exit_2(tmp_path):
    missing = runner.invoke(app, ["record", "-o", str(tmp_path / "t"), "--",
                                  "no-such-command-xyz"])
    assert missing.exit_code == 2
    assert "cannot run 'no-such-command-xyz'" in missing.output
    (tmp_path / "t" / "rank=0").mkdir(parents=True)
    (tmp_path / "t" / "rank=0" / "part-000000.parquet").write_bytes(b"old")
    ok = [sys.executable, "-c", "pass"]
    exists = runner.invoke(app, ["record", "-o", str(tmp_path / "t"), "--", *ok])
    assert exists.exit_code == 2 and "exists already; pass --force" in exists.output
    forced = runner.invoke(app, ["record", "-o", str(tmp_path / "t"), "--force", "--", *ok])
    # nothing was recorded, so the previous recording is put back as it was
    assert forced.exit_code == 0 and "no MoE layer was recorded" in forced.output
    assert (tmp_path / "t" / "rank=0" / "part-000000.parquet").read_bytes() == b"old"
    assert names(tmp_path) == ["t"]  # nothing left aside
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    foreign = runner.invoke(app, ["record", "-o", str(tmp_path / "mine"), "--force", "--", *ok])
    assert foreign.exit_code == 2 and "moetrace did not write" in foreign.output
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


class ToyRouter(torch.nn.Module):
    """Stands for an HF router (matched by module and name): returns logits, weights, ids."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(3, 4))
        self.num_experts = 3

    def forward(self, x):
        logits = x @ self.weight.T
        weights, ids = torch.topk(logits.softmax(-1), 1, dim=-1)
        return logits, weights, ids


ToyRouter.__module__, ToyRouter.__name__ = "transformers.models.toy.modeling_toy", "ToyTopKRouter"


def test_the_autorecorder_numbers_layers_across_models_as_they_first_run(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("MOETRACE_RECORD_DIR", str(tmp_path / "t"))
    monkeypatch.setenv("MOETRACE_RECORD_FLUSH_EVERY", "10")
    torch.manual_seed(0)
    first, second = torch.nn.ModuleList([ToyRouter(), ToyRouter()]), ToyRouter()
    auto = autorecord.start()
    expected = np.zeros((3, 2, 3), dtype=np.int64)
    try:
        opt = torch.optim.SGD(first.parameters(), lr=0.0)
        for step, repeats in enumerate((1, 2)):  # step 1 runs `second` twice
            x = torch.randn(5, 4)
            for layer, router in [(0, second)] * repeats + [(1, first[0]), (2, first[1])]:
                ids = router(x)[2].reshape(-1).numpy()
                expected[layer, step] += np.bincount(ids, minlength=3)
            opt.step()
    finally:
        auto.close()
    assert auto.layers == 3  # `second` ran first, so it is layer 0
    np.testing.assert_array_equal(read_trace(tmp_path / "t").loads().counts, expected)
    again = autorecord.start()  # a second process of rank 0 into the same directory
    try:
        with pytest.warns(RuntimeWarning, match="not recording process"):
            ToyRouter()(x)
    finally:
        again.close()
    assert again.recorder is None
