"""The CLI shell: commands listed, version, and the one place errors become exit codes."""

from __future__ import annotations

import pytest
from conftest import run_cli
from click.testing import CliRunner

import moetrace
from moetrace.cli import app
from moetrace.cli import app as app_module  # noqa: F401


def test_help_lists_every_command():
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0
    for command in ("record", "analyze", "predict", "report", "info"):
        assert command in result.output


@pytest.mark.parametrize("command", ["info", "record", "analyze", "predict", "report"])
def test_every_command_help_exits_0(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: moetrace " + command in result.stdout


def test_version_through_entry_point():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"moetrace {moetrace.__version__}"


def test_internal_error_exits_1_in_one_line(monkeypatch, tmp_path):
    import moetrace.pipeline
    import moetrace.trace.summary

    def broken(_trace):
        raise RuntimeError("boom")

    monkeypatch.setattr(moetrace.trace.summary, "describe", broken)
    monkeypatch.setattr(moetrace.pipeline, "open_trace", lambda path, run=None: None)
    result = CliRunner().invoke(app, ["info", "x"])
    assert result.exit_code == 1
    assert "internal error: RuntimeError: boom" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["info", "analyze", "predict", "report", "record"])
def test_usage_errors_show_usage_and_exit_2_never_internal(command, tmp_path):
    # record too: only the words after -- go to the training command
    result = run_cli(command, "--bogus", "x")
    assert result.returncode == 2, result.stderr
    assert f"Usage: moetrace {command}" in result.stderr
    assert "No such option" in result.stderr and "--bogus" in result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    missing = run_cli(command) if command != "record" else run_cli(command, "--demo")
    assert missing.returncode == 2 and "Missing" in missing.stderr


@pytest.mark.parametrize("args", [["record", "-o", "x.parquet"],
                                  ["record", "-o", "x.parquet", "--simulate", "gpt3-125m",
                                   "--demo"]])
def test_record_needs_exactly_one_source(args, tmp_path):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "give exactly one source" in result.output
