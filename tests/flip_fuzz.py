"""Flip single bits of a trace file and read each copy as moetrace would.

    python tests/flip_fuzz.py TRACE N SEED [--all]

flips N random bits spread over the whole file, N more over its footer (the Parquet footer,
which Parquet's page checksums do not cover), and every bit of the first 4 and last 8 bytes
(the magic bytes and the footer's length); with ``--all``, every bit of the file instead. Each
copy is read (``read_trace``, then the dense loads of the whole trace and of one layer's step
range, which the Parquet reader may narrow by the footer's statistics) and compared with the
original: steps, counts, dimensions, ranks and metadata. Prints one JSON object: how many
copies read as the same data, were refused (a MoetraceError: exit 2 with one line), read as
*different* data (the failure this guards against), or raised anything else (an internal
error), with the byte offsets of the same and different ones. Run in a subprocess by the tests
and the benchmark, so that a crash of native code (an abort) shows as a failed run, not a dead
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


def content(path: Path) -> tuple:
    """What a command could use of a trace: its dimensions, metadata, steps and counts, and
    one layer's counts over a step range."""
    trace = read_trace(path)
    loads = trace.loads()
    steps = loads.steps
    part = trace.loads(layers=[trace.n_layers - 1], start=int(steps[len(steps) // 3]),
                       stop=int(steps[-1 - len(steps) // 3]))
    return (trace.n_layers, trace.n_experts, trace.has_rank, trace.metadata, steps,
            loads.counts, part.counts)


def _equal(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y
               for x, y in zip(a, b, strict=True))


def classify(path: Path, want: tuple) -> str:
    try:
        got = content(path)
    except MoetraceError:
        return "refused"
    except Exception as exc:  # noqa: BLE001 - an internal error is what we count here
        return f"error: {type(exc).__name__}: {str(exc)[:200]}"
    return "same" if _equal(got, want) else "different"


def bits(data: bytes, n: int, seed: int, every: bool) -> list[int]:
    """The bits to flip, as bit offsets into ``data``."""
    if every:
        return list(range(len(data) * 8))
    rng = random.Random(seed)
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    ends = list(range(32)) + list(range((len(data) - 8) * 8, len(data) * 8))
    return ([rng.randrange(len(data) * 8) for _ in range(n)]
            + [rng.randrange(footer_start * 8, (len(data) - 8) * 8) for _ in range(n)] + ends)


def main(file: str, n: int, seed: int, every: bool = False) -> dict:
    data = Path(file).read_bytes()
    want = content(Path(file))
    tally: dict[str, int] = {}
    examples: dict[str, int] = {}
    where: dict[str, list[int]] = {"same": [], "different": []}
    flips = bits(data, n, seed, every)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "flipped.parquet"
        for bit in flips:
            flipped = bytearray(data)
            flipped[bit // 8] ^= 1 << (bit % 8)
            copy.write_bytes(flipped)
            kind = classify(copy, want)
            key = kind if not kind.startswith("error") else "internal_error"
            tally[key] = tally.get(key, 0) + 1
            if key in where:
                where[key].append(bit // 8)
            if key in ("different", "internal_error"):
                examples.setdefault(f"{key}: {kind}", bit)
    return {"flips": len(flips), "bytes": len(data), **tally, "examples": examples,
            "same_at": sorted(set(where["same"])), "different_at": sorted(set(where["different"]))}


if __name__ == "__main__":
    os.environ.setdefault("POLARS_MAX_THREADS", "1")
    os.environ.setdefault("RUST_BACKTRACE", "0")
    args = [a for a in sys.argv[1:] if a != "--all"]
    print(json.dumps(main(args[0], int(args[1]), int(args[2]), "--all" in sys.argv)))
