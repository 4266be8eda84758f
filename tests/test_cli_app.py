"""The CLI shell: commands listed, version, and the one place errors become exit codes."""

from __future__ import annotations

import pytest
from conftest import run_cli
from typer.testing import CliRunner

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
    import moetrace.cli.info as info_module

    def broken(_trace):
        raise RuntimeError("boom")

    monkeypatch.setattr(info_module, "describe", broken)
    monkeypatch.setattr(info_module, "read_trace", lambda path: None)
    result = CliRunner().invoke(app, ["info", "x"])
    assert result.exit_code == 1
    assert "internal error: RuntimeError: boom" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["record", "-o", "x.parquet"],
                                  ["record", "-o", "x.parquet", "--simulate", "gpt3-125m",
                                   "--demo"]])
def test_record_needs_exactly_one_source(args, tmp_path):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "give exactly one of" in result.output
