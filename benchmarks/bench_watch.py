"""``moetrace watch`` beside a job: update latency after a part lands, CPU per update, memory
over a long replay.

The 350M preset (12 layers x 128 experts) at 20,000 steps is cut into recorder-style parts of
100 steps (``rank=0/part-NNNNNN.parquet``, written under a hidden name, then renamed) that land
in a directory one every 0.25 s, 400 steps a second: far faster than a real job of that size
flushes. ``watch --json --gpus 16 --redundant 16`` follows it (forecast and plan every 250
steps). Latency: from a part's rename to the JSON line of the update that holds its last step
(parts that landed while an update was running are merged into the next one, so only parts
ending an update are timed). Memory: the watch process's RSS, sampled every 0.1 s.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

STEPS, PART, GAP = 20_000, 100, 0.25


def _parts(src: Path) -> list[tuple[Path, int]]:
    from moetrace.simulate import simulate_counts
    from moetrace.simulate.config import make_config
    from moetrace.trace.schema import TraceMetadata
    from moetrace.trace.write import TraceWriter, write_layer_groups

    config = make_config("gpt3-350m", steps=STEPS)
    counts, _ = simulate_counts(config, seed=0)
    meta = TraceMetadata(model="gpt3-350m-sim", n_layers=config.n_layers,
                         n_experts=config.n_experts, top_k=1, extra={"world_size": 1})
    (src / "rank=0").mkdir(parents=True)
    parts = []
    for i, first in enumerate(range(0, STEPS, PART)):
        path = src / "rank=0" / f"part-{i:06d}.parquet"
        with TraceWriter(path, meta, with_rank=True) as writer:
            write_layer_groups(writer, np.arange(first, first + PART), range(config.n_layers),
                               counts[:, first:first + PART], 0)
        parts.append((path, first + PART - 1))
    return parts


def _once(parts: list[tuple[Path, int]], run: Path) -> dict[str, float]:
    (run / "rank=0").mkdir(parents=True)
    landed: dict[int, float] = {}

    def feed():
        for path, last in parts:
            hidden = run / "rank=0" / f".{path.name}.tmp"
            shutil.copy(path, hidden)
            landed[last] = time.monotonic()
            os.rename(hidden, run / "rank=0" / path.name)
            time.sleep(GAP)

    import psutil

    proc = subprocess.Popen(
        [sys.executable, "-m", "moetrace", "watch", str(run), "--json", "--until-idle", "5",
         "--poll", "0.05", "--gpus", "16", "--redundant", "16", "--interval", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watched = psutil.Process(proc.pid)
    peak = [0]

    def sample():
        while proc.poll() is None:
            try:
                rss = watched.memory_info().rss
            except psutil.NoSuchProcess:
                break
            peak[0] = max(peak[0], rss)
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    threading.Thread(target=feed, daemon=True).start()
    latency, updates, rss = [], 0, {}
    for line in proc.stdout:
        now, step = time.monotonic(), json.loads(line)["step"]
        updates += 1
        if step in landed:
            latency.append(now - landed[step])
        for mark in (STEPS // 2, STEPS):  # RSS at the first update past half and at the end
            if step >= mark - 1 and mark not in rss:
                rss[mark] = watched.memory_info().rss
    proc.wait()
    return {"updates": updates, "latency median (ms)": 1000 * statistics.median(latency),
            "latency max (ms)": 1000 * max(latency), "peak RSS (MiB)": peak[0] / 2**20,
            f"RSS at step {STEPS // 2:,} (MiB)": rss.get(STEPS // 2, 0) / 2**20,
            f"RSS at step {STEPS:,} (MiB)": rss.get(STEPS, 0) / 2**20}


def main(runs: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        parts = _parts(Path(tmp) / "src")
        results = []
        for i in range(runs):
            before = os.times()
            result = _once(parts, Path(tmp) / f"run{i}")
            after = os.times()
            cpu = (after.children_user - before.children_user
                   + after.children_system - before.children_system)
            result["CPU per update (ms)"] = 1000 * cpu / max(result["updates"], 1)
            results.append(result)
    print(f"\n## watch: gpt3-350m x {STEPS:,} steps, parts of {PART} steps landing every "
          f"{GAP} s, --gpus 16 --redundant 16  (median of {runs} run(s), {os.cpu_count()} CPUs)")
    for key in results[0]:
        print(f"  {key:<32} {statistics.median(r[key] for r in results):10.0f}")


if __name__ == "__main__":
    main(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
