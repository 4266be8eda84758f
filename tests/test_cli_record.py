"""`record` and `convert` as a user meets them: usage errors, the one source rule, the presets
named once, the JSON of what was written, and the demo followed live by `watch`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import MOETRACE, leftovers, names, run_cli
from click.testing import CliRunner

from moetrace.cli import app
from moetrace.simulate import PRESETS
from moetrace.trace import read_trace

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


# -- usage errors and the one source rule ---------------------------------------------------

@pytest.mark.parametrize("typo", [["--step", "100"], ["--bogus"], ["--bogus", "--", "x"]])
def test_unknown_options_before_the_command_are_usage_errors(typo, tmp_path):
    out = tmp_path / "run"
    result = run_cli("record", "--demo", "-o", str(out), *typo)
    assert result.returncode == 2, result.stderr
    assert "No such option" in result.stderr and typo[0] in result.stderr
    assert "Usage: moetrace record" in result.stderr
    assert "give exactly one" not in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_options_after_the_double_dash_belong_to_the_command(tmp_path):
    """`--lr 3e-4`, `--help` and `-o` after `--` reach the training command untouched."""
    seen = tmp_path / "argv.json"
    script = f"import json, sys; json.dump(sys.argv[1:], open({str(seen)!r}, 'w'))"
    out = tmp_path / "run"
    result = run_cli("record", "-o", str(out), "--", sys.executable, "-c", script, "--lr",
                     "3e-4", "--help", "-o", "elsewhere", "--")
    assert result.returncode == 0, result.stderr
    assert json.loads(seen.read_text()) == ["--lr", "3e-4", "--help", "-o", "elsewhere", "--"]
    assert "no MoE layer was recorded" in result.stderr


def test_a_command_without_the_double_dash_is_refused_with_the_way_to_give_it(tmp_path):
    result = run_cli("record", "-o", str(tmp_path / "run"), sys.executable, "train.py")
    assert result.returncode == 2
    assert "Usage: moetrace record" in result.stderr  # one SRC at most: click's usage error
    result = run_cli("record", "-o", str(tmp_path / "run"), "train.py")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "SRC 'train.py' is read only with --from FORMAT" in result.stderr
    assert "after --" in result.stderr
    assert names(tmp_path) == []


@pytest.mark.parametrize("args, said", [
    ([], "give exactly one source"),
    (["--simulate", "gpt3-125m", "--demo"], "got --simulate PRESET and --demo"),
    (["--demo", "--", "python", "train.py"], "got --demo and a training command after --"),
    (["--from", "csv", "x.csv", "--simulate", "gpt3-125m"], "got --simulate PRESET and --from"),
    (["--simulate", "gpt3-125m", "--flush-every", "5"],
     "--flush-every does not apply to --simulate PRESET"),
    (["--simulate", "gpt3-125m", "--every", "5"], "--every does not apply to --simulate"),
    (["--simulate", "gpt3-125m", "--layout", "pp=2"], "--layout does not apply to --simulate"),
    (["--demo", "--layers", "3"], "--layers does not apply to --demo"),
    (["--demo", "--count-eval"], "--count-eval does not apply to --demo"),
    (["--from", "csv", "x.csv", "--seed", "3"], "--seed does not apply to --from FORMAT SRC"),
    (["--count-eval", "--steps", "4", "--", "python", "train.py"],
     "--steps does not apply to a training command after --"),
])
def test_one_source_per_call_and_only_the_options_it_reads(args, said, tmp_path):
    out = tmp_path / "t.parquet"
    result = runner.invoke(app, ["record", "-o", str(out), *args])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.stderr.split())
    assert result.stderr.count("\n") == 1 and "Usage:" not in result.stderr
    assert names(tmp_path) == []


def test_help_and_errors_name_the_same_presets_taken_from_the_presets():
    listed = ", ".join(PRESETS)
    assert "deepseek-v3" in PRESETS
    help_text = " ".join(run_cli("record", "--help").stdout.split())
    assert all(name in help_text for name in PRESETS)
    wrong = run_cli("record", "--simulate", "gpt3-7b", "-o", "never.parquet")
    assert wrong.returncode == 2 and f"(known: {listed})" in wrong.stderr
    assert "Usage: moetrace record [OPTIONS] [SRC] [-- COMMAND...]" in help_text
    table = (ROOT / "docs" / "simulation.md").read_text()
    assert all(f"| `{name}` |" in table for name in PRESETS)  # the docs' presets table


# -- --json and --json-out: what was written ------------------------------------------------

def _doc(result) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # stdout holds the JSON document and nothing else


def test_record_simulate_json_says_what_was_written(tmp_path):
    out, doc_path = tmp_path / "t.parquet", tmp_path / "t.json"
    doc = _doc(run_cli("record", "--simulate", "gpt3-125m", "--steps", "300", "--layers", "2",
                       "--seed", "5", "-o", str(out), "--json", "--json-out", str(doc_path)))
    assert doc == json.loads(doc_path.read_text())
    assert doc == {
        "schema": "moetrace.record", "version": 1, "source": "simulate", "path": str(out),
        "layers": 2, "experts": 16, "steps": {"first": 0, "last": 299, "count": 300,
                                              "interval": 1},
        "rows": 300 * 2 * 16, "parts": 1, "bytes": out.stat().st_size,
        "preset": "gpt3-125m", "seed": 5}
    assert pq.ParquetFile(out).metadata.num_rows == doc["rows"]
    assert names(tmp_path) == ["t.json", "t.parquet"] and leftovers(tmp_path) == []


def test_record_import_json_and_the_human_line_without_json(tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("step,layer,expert,tokens\n4,0,0,2\n4,0,1,2\n6,0,0,3\n6,0,1,1\n")
    out = tmp_path / "i.parquet"
    doc_path = tmp_path / "i.json"
    result = run_cli("record", "--from", "csv", str(src), "-o", str(out), "--json-out",
                     str(doc_path))
    assert result.returncode == 0 and "imported csv dump" in result.stdout  # still the line
    doc = json.loads(doc_path.read_text())
    assert (doc["source"], doc["format"], doc["src"]) == ("import", "csv", str(src))
    assert doc["steps"] == {"first": 4, "last": 6, "count": 2, "interval": 2}
    assert (doc["layers"], doc["experts"], doc["rows"], doc["parts"]) == (1, 2, 4, 1)


def test_record_demo_json_into_a_directory_counts_its_parts(tmp_path, monkeypatch):
    from moetrace.record.demo import stdlib_corpus

    corpus = stdlib_corpus(max_bytes=300_000)
    monkeypatch.setattr("moetrace.record.demo.stdlib_corpus", lambda: corpus)
    out = tmp_path / "demo"
    result = runner.invoke(app, ["record", "--demo", "--steps", "25", "--flush-every", "10",
                                 "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    parts = sorted((out / "rank=0").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-00000{i}.parquet" for i in range(3)]
    assert (doc["source"], doc["path"], doc["parts"]) == ("demo", str(out), 3)
    assert doc["steps"] == {"first": 0, "last": 24, "count": 25, "interval": 1}
    assert (doc["layers"], doc["experts"], doc["rows"]) == (4, 8, 25 * 4 * 8)
    assert doc["bytes"] == sum(p.stat().st_size for p in parts)
    assert doc["seed"] == 0 and doc["loss"]["first"] > doc["loss"]["last"] > 0


TOY_RUN = textwrap.dedent("""
    import sys, torch
    print("training output of the job")

    class ToyTopKRouter(torch.nn.Module):  # named and placed as an HF router is
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(3, 4))
            self.num_experts = 3
        def forward(self, x):
            logits = x @ self.weight.T
            weights, ids = torch.topk(logits.softmax(-1), 1, dim=-1)
            return logits, weights, ids
    ToyTopKRouter.__module__ = "transformers.models.toy.modeling_toy"

    torch.manual_seed(0)
    router = ToyTopKRouter()
    opt = torch.optim.SGD(router.parameters(), lr=0.1)
    for step in range(int(sys.argv[1])):
        router(torch.randn(5, 4))[0].sum().backward()
        opt.step()
        opt.zero_grad()
    sys.exit(int(sys.argv[2]))
""")


def test_record_command_json_has_the_exit_code_and_ranks_and_keeps_stdout_clean(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TOY_RUN)
    out = tmp_path / "run"
    result = run_cli("record", "-o", str(out), "--flush-every", "2", "--json", "--",
                     sys.executable, str(script), "5", "3")
    assert result.returncode == 3  # the command's own exit status, as without --json
    assert "training output of the job" in result.stderr  # moved off stdout, kept
    doc = json.loads(result.stdout)
    files = sorted(out.rglob("part-*.parquet"))
    assert doc == {
        "schema": "moetrace.record", "version": 1, "source": "command", "path": str(out),
        "layers": 1, "experts": 3, "steps": {"first": 0, "last": 4, "count": 5,
                                             "interval": 1},
        "rows": 5 * 3, "parts": 3, "bytes": sum(f.stat().st_size for f in files),
        "command": [sys.executable, str(script), "5", "3"], "exit_code": 3, "ranks": 1,
        "problem": None}
    nothing = run_cli("record", "-o", str(tmp_path / "none"), "--json", "--", sys.executable,
                      "-c", "pass")
    doc = json.loads(nothing.stdout)
    assert (doc["exit_code"], doc["ranks"], doc["layers"], doc["rows"]) == (0, 0, None, None)
    assert "no MoE layer was recorded" in doc["problem"]


def test_json_out_is_checked_before_any_work_and_apart_from_the_trace(tmp_path):
    sentinel = tmp_path / "ran"
    taken = tmp_path / "taken.json"
    taken.write_text("mine")
    job = ["--", sys.executable, "-c", f"open({str(sentinel)!r}, 'w')"]
    result = run_cli("record", "-o", str(tmp_path / "run"), "--json-out", str(taken), *job)
    assert result.returncode == 2 and "exists already" in result.stderr
    assert not sentinel.exists() and taken.read_text() == "mine"  # the job never started
    result = run_cli("record", "--demo", "-o", str(tmp_path / "d"), "--json-out",
                     str(tmp_path / "d" / "doc.json"))
    assert result.returncode == 2 and "one inside the other's directory" in result.stderr
    same = tmp_path / "same.parquet"
    result = run_cli("record", "--simulate", "gpt3-125m", "--steps", "50", "-o", str(same),
                     "--json-out", str(same))
    assert result.returncode == 2 and "is named twice" in result.stderr
    result = run_cli("record", "--simulate", "nope", "-o", str(tmp_path / "n.parquet"),
                     "--json-out", str(tmp_path / "n.json"))
    assert result.returncode == 2  # a failing command leaves nothing new
    assert names(tmp_path) == ["taken.json"] and leftovers(tmp_path) == []


def test_convert_json(tmp_path):
    src = tmp_path / "c.csv"
    src.write_text("step,layer,expert,tokens,rank\n0,0,0,2,0\n0,0,1,2,0\n0,0,0,1,1\n"
                   "0,0,1,3,1\n1,0,0,2,0\n1,0,1,2,0\n1,0,0,1,1\n1,0,1,3,1\n")
    original = tmp_path / "o.parquet"
    assert run_cli("record", "--from", "csv", str(src), "-o", str(original)).returncode == 0
    out, doc_path = tmp_path / "lm.parquet", tmp_path / "lm.json"
    doc = _doc(run_cli("convert", str(original), "-o", str(out), "--json", "--json-out",
                       str(doc_path)))
    assert doc == json.loads(doc_path.read_text())
    assert doc == {"schema": "moetrace.convert", "version": 1, "source": str(original),
                   "path": str(out), "layers": 1, "experts": 2,
                   "steps": {"first": 0, "last": 1, "count": 2, "interval": 1},
                   "rows": 4, "parts": 1, "bytes": out.stat().st_size}  # ranks summed
    again = run_cli("convert", str(original), "-o", str(tmp_path / "x.parquet"),
                    "--json-out", str(original))
    assert again.returncode == 2 and "is an input of this command" in again.stderr
    assert not (tmp_path / "x.parquet").exists()


# -- the demo, watched while it trains -------------------------------------------------------

@pytest.mark.slow
def test_the_demo_writes_complete_parts_as_it_trains_and_watch_follows_it(tmp_path):
    """`moetrace record --demo -o live/ &` then `moetrace watch live/`, as docs/demo.md says."""
    from moetrace.watch import watch

    live = tmp_path / "live"
    trainer = subprocess.Popen([str(MOETRACE), "record", "--demo", "-o", str(live), "--steps",
                                "3000", "--flush-every", "20"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        parts: list[Path] = []
        while time.monotonic() < deadline and trainer.poll() is None and len(parts) < 3:
            time.sleep(0.2)
            parts = sorted(live.glob("rank=0/part-*.parquet"))
            hidden = [p for p in tmp_path.glob(".*/rank=0/part-*.parquet")]
            assert not hidden, "the demo writes its parts under a hidden name"
        assert trainer.poll() is None and len(parts) >= 3, "no parts while training"
        trace = read_trace(live)  # every part there is complete: a valid trace of them
        assert trace.n_steps >= 60 and trace.n_steps % 20 == 0
        assert int(trace.steps[-1]) == trace.n_steps - 1
        seen: list[int] = []
        result = watch(live, on_update=lambda snapshot, events: seen.append(snapshot["step"]),
                       until_step=199, until_idle=90, poll=0.2)
        assert result.reason == "until-step" and seen[-1] >= 199 and seen == sorted(seen)
        assert trainer.poll() is None  # watch got there while the demo was still training
        assert leftovers(tmp_path) == []
    finally:
        os.killpg(trainer.pid, signal.SIGKILL)
        trainer.wait()
    final = read_trace(live)  # what a killed demo leaves: complete parts, readable
    assert final.n_steps % 20 == 0 and final.n_steps >= 200
