"""Without torch installed, everything but recording and the LSTM still works."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from conftest import long_frame

_NO_TORCH = "import sys; sys.modules['torch'] = None\nfrom moetrace.cli import main\n" \
            "sys.argv = ['moetrace', *sys.argv[1:]]\nmain()\n"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TORCH, *args], capture_output=True,
                          text=True)


def test_csv_import_and_info_need_no_torch(tmp_path, small_counts):
    src = tmp_path / "loads.csv"
    long_frame(small_counts).write_csv(src)
    out = tmp_path / "t.parquet"
    result = _run("record", "--from", "csv", str(src), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert _run("info", str(out)).returncode == 0


def test_recording_without_torch_names_the_extra(tmp_path):
    result = _run("record", "-o", str(tmp_path / "r"), "--", sys.executable, "-c", "pass")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "moetrace: error: recording a training run needs torch, which is not installed: "
        "pip install 'moetrace[record]'"]
    assert not np.any([p.name == "r" for p in tmp_path.iterdir()])
