"""Flip random single bits of a trace file and read each copy as moetrace would.

    python tests/flip_fuzz.py TRACE N SEED [--every-byte]

prints one JSON object: how many copies read as the same data, were refused (a
MoetraceError: exit 2 with one line), read as *different* data (the failure this guards
against), or raised anything else (an internal error). Run in a subprocess by the tests and
the benchmark, so that a crash of native code (an abort) shows as a failed run, not a dead
test worker.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path

import numpy as np

from moetrace.errors import MoetraceError
from moetrace.trace import read_trace


def classify(path: Path, want_steps: np.ndarray, want: np.ndarray) -> str:
    try:
        trace = read_trace(path)
        loads = trace.loads()
    except MoetraceError:
        return "refused"
    except Exception as exc:  # noqa: BLE001 - an internal error is what we count here
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"
    same = np.array_equal(loads.steps, want_steps) and np.array_equal(loads.counts, want)
    return "same" if same else "different"


def main(file: str, n: int, seed: int) -> dict:
    data = Path(file).read_bytes()
    original = read_trace(file).loads()
    rng = random.Random(seed)
    tally: dict[str, int] = {}
    examples: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "flipped.parquet"
        for _ in range(n):
            bit = rng.randrange(len(data) * 8)
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            copy.write_bytes(flipped)
            kind = classify(copy, original.steps, original.counts)
            key = kind if not kind.startswith("error") else "internal_error"
            tally[key] = tally.get(key, 0) + 1
            if key in ("different", "internal_error"):
                examples.setdefault(f"{key}: {kind}", bit)
    return {"flips": n, "bytes": len(data), **tally, "examples": examples}


if __name__ == "__main__":
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
