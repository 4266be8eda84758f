"""Traces of DeepSeek-V3 size on this machine: info, analyze and the default report on the
``deepseek-v3`` preset (58 MoE layers x 256 experts, top-8), with the peak memory of the
whole process tree (the command and its worker processes, summed, sampled every 0.2 s).

    python -m benchmarks scale [--runs N]          # 30,000 steps (445M rows)
    MOETRACE_SCALE_STEPS=100000 python -m benchmarks scale --runs 1   # 1.5B rows

Targets (issue 12): each under 4 GiB at 30,000 and at 100,000 steps, time growing no worse
than linearly in steps. The trace is simulated once into ``MOETRACE_BENCH_DIR`` (default a
temporary directory; about 1.6 GB per 30,000 steps) and reused when it is already there.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measured(args: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS of the process tree in GiB) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    peak = [0]

    def sample():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{err.decode()[-2000:]}")
    return time.perf_counter() - start, peak[0] / 2**30


def main(runs: int = 1) -> None:
    steps = int(os.environ.get("MOETRACE_SCALE_STEPS", "30000"))
    keep = os.environ.get("MOETRACE_BENCH_DIR")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(keep or tmp)
        base.mkdir(parents=True, exist_ok=True)
        trace = base / f"deepseek-v3-{steps}.parquet"
        moetrace = [sys.executable, "-m", "moetrace"]
        if not trace.exists():
            wall, peak = measured(moetrace + ["record", "--simulate", "deepseek-v3", "--steps",
                                              str(steps), "-o", str(trace)])
            print(f"\n## scale: simulate deepseek-v3 x {steps:,} steps: {wall:.0f} s, "
                  f"peak {peak:.2f} GiB, {trace.stat().st_size / 2**30:.2f} GiB on disk")
        print(f"\n## scale: deepseek-v3 x {steps:,} steps ({58 * 256 * steps / 1e6:,.0f}M rows)"
              f"  (median of {runs} run(s), {os.cpu_count()} CPUs; peak: the process tree)")
        for label, args in (("info", ["info", str(trace)]),
                            ("analyze", ["analyze", str(trace)]),
                            ("report (defaults)", ["report", str(trace), "-o",
                                                   str(base / "report"), "--force"])):
            results = [measured(moetrace + args) for _ in range(runs)]
            wall = statistics.median(r[0] for r in results)
            peak = max(r[1] for r in results)
            print(f"  {label:<24} wall {wall:9.0f} s   peak RSS {peak:6.2f} GiB")


if __name__ == "__main__":
    main(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 1)
