"""`python -m benchmarks [NAME ...] [--runs N]`: run the named benchmarks (default: all but
``scale``, which simulates a DeepSeek-V3-sized trace and takes the better part of an hour: run it
by name). `python -m benchmarks docs-figures [--check] [NAME ...]` makes the figures README.md
and docs/ show from a run (benchmarks/bench_docs_figures.py)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

#: Every benchmark module, in the order a trace flows through moetrace.
BENCHMARKS = ["cli", "simulate", "read", "analyze", "predict", "report", "peers", "placement", "record", "watch", "fuzz", "real", "scale"]
#: Run when no name is given.
DEFAULT = [name for name in BENCHMARKS if name != "scale"]


def main() -> None:
    if sys.argv[1:2] == ["docs-figures"]:
        from benchmarks import bench_docs_figures

        bench_docs_figures.cli(sys.argv[2:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all but scale)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median is shown)")
    parser.add_argument("--baseline", metavar="DIR",
                        help="a checkout of another moetrace version to compare against, run "
                             "alternately with this one (see benchmarks/common.py)")
    args = parser.parse_args()
    if args.baseline:
        from benchmarks import common

        common.BASELINE = str(Path(args.baseline).resolve())
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]} (known: {', '.join(BENCHMARKS)})")
    for name in args.names or DEFAULT:
        importlib.import_module(f"benchmarks.bench_{name}").main(runs=args.runs)


if __name__ == "__main__":
    main()
