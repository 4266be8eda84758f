"""Bit flips of moetrace-written traces: how many are refused, read the same, or misread.

The suite runs 1,096 flips (tests/test_fuzz.py); this runs many more, on two file shapes, with
the same helper (tests/flip_fuzz.py: FLIPS anywhere in the file, FLIPS in its footer, and every
bit of the magic bytes and the footer's length, per seed) in a subprocess, so that a crash of
native code shows. Every flip should be refused but those in the whole-file checksum record's
key name, which read the same (docs/trace-format.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLIPS = 5000


def main(runs: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for label, args in (("125m-style, 2 layers x 8 experts x 500 steps",
                             ["--layers", "2", "--experts", "8", "--steps", "500"]),
                            ("350m-style, 1 layer x 128 experts x 1,000 steps",
                             ["--layers", "1", "--steps", "1000"])):
            path = Path(tmp) / f"{len(label)}.parquet"
            preset = "gpt3-125m" if "125m" in label else "gpt3-350m"
            subprocess.run([sys.executable, "-m", "moetrace", "record", "--simulate", preset,
                            *args, "-o", str(path)], check=True, capture_output=True, cwd=ROOT)
            totals: dict[str, int] = {}
            for seed in range(runs):
                out = subprocess.run([sys.executable, str(ROOT / "tests" / "flip_fuzz.py"),
                                      str(path), str(FLIPS), str(seed)], capture_output=True,
                                     text=True, cwd=ROOT)
                if out.returncode != 0:
                    totals["crashed runs"] = totals.get("crashed runs", 0) + 1
                    continue
                for key, value in json.loads(out.stdout).items():
                    if isinstance(value, int) and key != "bytes":
                        totals[key] = totals.get(key, 0) + value
            print(f"\n## fuzz: {label}, {path.stat().st_size:,} bytes, {runs} x "
                  f"({FLIPS:,} anywhere + {FLIPS:,} in the footer + 96 in the magic and footer "
                  "length) single-bit flips")
            for key in ("flips", "refused", "same", "different", "internal_error",
                        "crashed runs"):
                print(f"  {key:<48} {totals.get(key, 0):10,}")


if __name__ == "__main__":
    main()
