"""The one output policy: refuse existing outputs, never touch an input, replace only what
moetrace wrote, atomic replacement, leftovers of dead writers cleaned (docs/cli.md)."""

from __future__ import annotations

import json
import os
import socket

import pytest
from conftest import leftovers, names, run_cli

from moetrace.errors import OutputError, OutputExistsError
from moetrace.output import MARKER, check_output, write_dir, write_file
from moetrace.simulate import simulate_trace


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return simulate_trace(tmp_path_factory.mktemp("out") / "t.parquet", preset="gpt3-125m",
                          steps=1500, layers=2, seed=2)


def test_atomic_file_replaces_only_on_success(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with write_file(dest, force=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert dest.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary left behind
    with pytest.raises(OutputExistsError, match="pass --force"):
        with write_file(dest) as tmp:
            tmp.write_text("new")
    with write_file(dest, force=True) as tmp:
        tmp.write_text("new")
    assert dest.read_text() == "new"


def test_outputs_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        with write_file(tmp_path / "f") as tmp:
            tmp.write_text("x")
        with write_dir(tmp_path / "d"):
            pass
    finally:
        os.umask(umask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_a_directory_is_replaced_whole_and_only_if_moetrace_wrote_it(tmp_path):
    dest = tmp_path / "report"
    dest.mkdir()
    (dest / "notes.txt").write_text("a user's notes")
    with pytest.raises(OutputExistsError, match="pass --force"):
        check_output(dest, kind="dir")
    with pytest.raises(OutputError, match="moetrace did not write"):
        with write_dir(dest, force=True):
            pass
    assert names(dest) == ["notes.txt"]
    ours = tmp_path / "ours"
    with write_dir(ours, command="test") as tmp:
        (tmp / "a.txt").write_text("first")
    assert json.loads((ours / MARKER).read_text())["command"] == "test"
    with pytest.raises(RuntimeError):
        with write_dir(ours, force=True) as tmp:
            (tmp / "partial.txt").write_text("x")
            raise RuntimeError("crash")
    assert names(ours) == ["a.txt"] and names(tmp_path) == ["ours", "report"]
    with write_dir(ours, force=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert names(ours) == ["b.txt"] and leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    with write_dir(empty, force=True) as tmp:  # an empty folder holds nothing to lose
        (tmp / "c.txt").write_text("x")
    assert names(empty) == ["c.txt"]


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_an_output_never_is_lies_in_or_contains_an_input(tmp_path, kind):
    data = tmp_path / "data"
    data.mkdir()
    trace = data / "t.parquet"
    trace.write_text("input")
    link = tmp_path / "link.parquet"
    link.symlink_to(trace)
    for dest, problem in ((trace, "is an input"), (link, "is an input"),
                          (data / "out", "lies inside the input directory"),
                          (data, "contains the input")):
        for force in (False, True):
            with pytest.raises(OutputError, match=problem):
                check_output(dest, kind=kind, inputs=[trace if dest != data / "out" else data],
                             force=force)
    assert trace.read_text() == "input"


def test_leftovers_of_dead_writers_are_removed_and_an_output_left_aside_is_put_back(tmp_path):
    host = __import__("moetrace.output", fromlist=["_HOST"])._HOST
    dead = 4_000_000  # no such PID on Linux (pid_max is at most 4194304)
    stale = tmp_path / f".report.moetrace-{dead}@{host}.abc.tmp"
    stale.mkdir()
    (stale / "half.json").write_text("{")
    aside = tmp_path / f".report.moetrace-{dead}@{host}.def.old"
    aside.mkdir()
    (aside / "report.json").write_text("{}")
    (aside / MARKER).write_text("{}")
    alive = tmp_path / f".report.moetrace-{os.getpid()}@{host}.ghi.tmp"
    alive.mkdir()  # a writer still running: left alone
    other_host = tmp_path / f".report.moetrace-{dead}@not-{socket.gethostname()[:8]}.x.tmp"
    other_host.mkdir()  # another machine's writer on shared storage: left alone
    with pytest.raises(OutputExistsError):  # the previous output is back at the path
        with write_dir(tmp_path / "report"):
            pass
    assert (tmp_path / "report" / "report.json").read_text() == "{}"
    assert not stale.exists() and alive.exists() and other_host.exists()


def test_issue_cases_through_the_entry_point(trace, tmp_path):
    # predict onto its own input, analyze's JSON onto the trace: refused, the trace intact
    before = trace.read_bytes()
    for args in (["predict", str(trace), "-o", str(trace), "--predictors", "naive"],
                 ["predict", str(trace), "-o", str(trace), "--predictors", "naive", "--force"],
                 ["analyze", str(trace), "--json-out", str(trace), "--force"],
                 ["report", str(trace), "-o", str(trace), "--force", "--predictors", "naive"],
                 ["analyze", str(trace), "--out", str(trace.parent), "--force"]):
        result = run_cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "input" in result.stderr
    assert trace.read_bytes() == before
    # record --simulate over an existing file: refused without --force
    existing = tmp_path / "sim.parquet"
    existing.write_bytes(b"precious")
    result = run_cli("record", "--simulate", "gpt3-125m", "--steps", "500", "--layers", "1",
                     "-o", str(existing))
    assert result.returncode == 2 and "exists already; pass --force" in result.stderr
    assert existing.read_bytes() == b"precious"
    # report --force onto a user's folder: refused, notes.txt kept
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    result = run_cli("report", str(trace), "-o", str(folder), "--force", "--predictors", "naive",
                     "--horizon", "200")
    assert result.returncode == 2 and "moetrace did not write" in result.stderr
    assert (folder / "notes.txt").read_text() == "keep"
    # extensions are honoured: a trace is Parquet
    result = run_cli("record", "--simulate", "gpt3-125m", "--steps", "500", "-o",
                     str(tmp_path / "x.csv"))
    assert result.returncode == 2 and "*.parquet" in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_record_demo_force_replaces_its_own_directory(tmp_path):
    out = tmp_path / "demo"
    assert run_cli("record", "--demo", "--steps", "3", "-o", str(out)).returncode == 0
    again = run_cli("record", "--demo", "--steps", "4", "--force", "-o", str(out))
    assert again.returncode == 0, again.stderr
    from moetrace.trace import read_trace
    assert read_trace(out).n_steps == 4
