"""Traces of DeepSeek-V3 size on this machine: simulate, info, analyze, the default report and
replay on the ``deepseek-v3`` preset (58 MoE layers x 256 experts, top-8), each with its wall
time, its time per million rows and the peak memory of its whole process tree (the command
and its worker processes, summed, sampled every 0.2 s), and the machine's load average while
it ran.

    python -m benchmarks scale [--runs N]                              # 30,000 steps (445M rows)
    MOETRACE_SCALE_STEPS=100000 python -m benchmarks scale --runs 1   # 1.5B rows

``MOETRACE_SCALE_LAYERS`` (default 58) runs the same on fewer layers, to try things quickly.

Targets (issue 28): each under 4 GiB, and time per row at most 1.15x that of the 30,000-step
run. The trace is simulated once into ``MOETRACE_BENCH_DIR`` (default a temporary directory;
about 1.9 GB per 30,000 steps) and reused when it is already there; the figures of every size
run are kept in ``scale.json`` there, and once the 30,000-step figures are in it a run at
another size prints, command by command, the time per row of the larger size over that of
the smaller (above 1: slower than linear).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the size the others are compared with, and the targets
REFERENCE_STEPS = 30_000
LINEAR = 1.15
MEMORY_GIB = 4.0
EXPERTS = 256


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


def measured(args: list[str]) -> dict:
    """Wall seconds, peak RSS of the process tree (GiB) and the 1-minute load average at the
    start and the end of one command."""
    load = os.getloadavg()[0]
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
    return {"wall": time.perf_counter() - start, "peak": peak[0] / 2**30,
            "load": [round(load, 2), round(os.getloadavg()[0], 2)]}


def _line(label: str, figure: dict, rows: float) -> str:
    per = figure["wall"] / (rows / 1e6)
    over = "" if figure["peak"] <= MEMORY_GIB else "  OVER 4 GiB"
    return (f"  {label:<20} wall {figure['wall']:7.0f} s  {per * 1000:7.1f} ms per M rows  "
            f"peak {figure['peak']:5.2f} GiB  load {figure['load'][0]:.1f}->"
            f"{figure['load'][1]:.1f}{over}")


def main(runs: int = 1) -> None:
    steps = int(os.environ.get("MOETRACE_SCALE_STEPS", str(REFERENCE_STEPS)))
    layers = int(os.environ.get("MOETRACE_SCALE_LAYERS", "58"))
    keep = os.environ.get("MOETRACE_BENCH_DIR")
    rows = layers * EXPERTS * steps
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(keep or tmp)
        base.mkdir(parents=True, exist_ok=True)
        book = base / "scale.json"
        record = json.loads(book.read_text()) if book.exists() else {}
        shape = "" if layers == 58 else f"-{layers}layers"
        mine = record.setdefault(f"{steps}{shape}", {})
        trace = base / f"deepseek-v3-{steps}{shape}.parquet"
        moetrace = [sys.executable, "-m", "moetrace"]
        print(f"\n## scale: deepseek-v3 x {steps:,} steps, {layers} layers ({rows / 1e6:,.0f}M "
              f"rows)  (median of "
              f"{runs} run(s), {os.cpu_count()} CPUs; peak: the process tree; load: the "
              "1-minute load average at the start and the end)")
        if not trace.exists():
            mine["simulate"] = measured(moetrace + ["record", "--simulate", "deepseek-v3",
                                                    "--steps", str(steps), "--layers",
                                                    str(layers), "-o", str(trace)])
            mine["simulate"]["file_gib"] = trace.stat().st_size / 2**30
        if "simulate" in mine:
            print(_line("simulate", mine["simulate"], rows) +
                  f"  ({mine['simulate']['file_gib']:.2f} GiB file)")
        for label, args in (("info", ["info", str(trace)]),
                            ("analyze", ["analyze", str(trace)]),
                            ("report (defaults)", ["report", str(trace), "-o",
                                                   str(base / f"report-{steps}{shape}"),
                                                   "--force"]),
                            ("replay", ["replay", str(trace), "--gpus", "8"])):
            results = [measured(moetrace + args) for _ in range(runs)]
            mine[label] = {"wall": statistics.median(r["wall"] for r in results),
                           "peak": max(r["peak"] for r in results),
                           "load": [min(r["load"][0] for r in results),
                                    max(r["load"][1] for r in results)]}
            print(_line(label, mine[label], rows), flush=True)
            book.write_text(json.dumps(record, indent=1))
        reference = record.get(f"{REFERENCE_STEPS}{shape}")
        if reference and steps != REFERENCE_STEPS:
            # the larger size's time per row over the smaller's, whichever this run is
            big, small = (steps, REFERENCE_STEPS) if steps > REFERENCE_STEPS else (
                REFERENCE_STEPS, steps)
            print(f"\n  time per row at {big:,} steps over that at {small:,} (target at most "
                  f"{LINEAR:g}x):")
            ratio = steps / REFERENCE_STEPS
            for label, figure in mine.items():
                if label in reference:
                    per_row = figure["wall"] / reference[label]["wall"] / ratio
                    per_row = per_row if steps > REFERENCE_STEPS else 1 / per_row
                    print(f"  {label:<20} {per_row:5.2f}x  ({figure['wall']:.0f} s against "
                          f"{reference[label]['wall']:.0f} s for {ratio:.2f}x the rows)"
                          f"{'' if per_row <= LINEAR else '  OVER'}")


if __name__ == "__main__":
    main(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 1)
