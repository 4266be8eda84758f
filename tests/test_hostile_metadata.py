"""Metadata and names are data: escape sequences and markup from a trace never reach a
terminal, a Markdown file or a web page as commands; JSON keeps them exact."""

from __future__ import annotations

import json

import numpy as np
from conftest import long_frame, run_cli

from moetrace.trace import TraceMetadata, write_trace

EVIL = "evil\x1b]0;pwned\x07 [/] [bold]x[/bold] <script>alert(1)</script>\x1b[2J\u202e"


def _trace(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.multinomial(400, np.ones(4) / 4, size=(1, 1200))
    path = tmp_path / "t.parquet"
    write_trace(long_frame(counts), path, TraceMetadata(model=EVIL, top_k=1,
                                                        extra={"note\x1b[31m": EVIL}))
    return path


def _no_controls(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


def test_info_shows_escape_sequences_escaped_and_markup_inert(tmp_path):
    path = _trace(tmp_path)
    result = run_cli("info", str(path))
    assert result.returncode == 0, result.stderr
    _no_controls(result.stdout)
    assert "\\x1b]0;pwned\\x07" in result.stdout and "[/]" in result.stdout
    doc = json.loads(run_cli("info", str(path), "--json").stdout)
    assert doc["metadata"]["model"] == EVIL  # JSON stays exact


def test_report_text_carries_no_script_and_no_escape_bytes(tmp_path):
    path = _trace(tmp_path)
    out = tmp_path / "rep"
    result = run_cli("report", str(path), "-o", str(out), "--predictors", "naive",
                     "--horizon", "100", "--min-history", "200", "--origins", "3")
    assert result.returncode == 0, result.stderr
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        _no_controls(text)
        assert "<script>" not in text
    assert "&lt;script&gt;" in (out / "report.html").read_text()
    assert json.loads((out / "report.json").read_text())["trace"]["model"] == EVIL


def test_a_path_with_control_characters_in_an_error_stays_one_visible_line(tmp_path):
    result = run_cli("info", str(tmp_path / "no\x1b[2Jsuch.parquet"))
    assert result.returncode == 2
    _no_controls(result.stderr)
    assert result.stderr.count("\n") == 1
