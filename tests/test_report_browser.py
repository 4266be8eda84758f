"""The report in a real headless browser at desktop and phone widths (scripts/
check_report_browser.py): nothing runs off the page and the bottom line is on the first
screen. Needs a locally installed Chromium or Chrome; skipped, saying so, without one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from report_data import FAST, small_trace

from moetrace.pipeline import build_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from check_report_browser import NO_BROWSER, find_browser  # noqa: E402


@pytest.mark.slow
def test_report_fits_phone_and_desktop_in_a_real_browser(tmp_path):
    if find_browser() is None:
        pytest.skip("no Chromium or Chrome installed: the browser check did not run")
    trace = small_trace(tmp_path / "trace")
    report = build_report(trace, tmp_path / "rep", predictors=["naive", "sw_avg"], **FAST)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_report_browser.py"),
                           str(report.path), "--screenshots", str(tmp_path / "shots")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode != NO_BROWSER
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name for p in (tmp_path / "shots").glob("*.png")} == {"report-desktop.png",
                                                                    "report-phone.png"}
