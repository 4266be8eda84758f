"""Recording overhead: demo-trainer step time with and without the recorder attached.

Target: recording adds at most 2% to the step time. Each pair of short runs trains the same
seed, so both arms do exactly the same arithmetic; only the recorder differs (device
bincounts, one host copy per step, a part file every 20 steps: 5x the default rate, to be
pessimistic). The overhead is the median over pairs of median-step ratios, arms alternating
in order, which cancels the drift of a shared machine better than comparing two long runs.
The recorder's own work per step (4 layers' ids, one step, parts every 100 steps) is also
timed alone: a noise-free bound on what recording can add.
"""

from __future__ import annotations

from benchmarks.common import measure, print_figures

STEPS, PAIRS = 60, 8
WORK_STEPS = 2000  # recorder-only steps timed on their own

_CODE = f"""
import tempfile
import numpy as np
from moetrace.record.demo import stdlib_corpus, train_demo
corpus = stdlib_corpus(max_bytes=1_000_000)
train_demo(None, steps=20, corpus=corpus)  # warm-up: allocator, kernels
arms = {{"plain": [], "recorded": []}}
for pair in range({PAIRS}):
    with tempfile.TemporaryDirectory() as tmp:
        for arm in (("plain", "recorded") if pair % 2 == 0 else ("recorded", "plain")):
            out = None if arm == "plain" else tmp + "/trace"
            arms[arm].append(train_demo(out, steps={STEPS}, seed=pair, corpus=corpus,
                                        flush_every=20).step_seconds)
ratios = [np.median(r) / np.median(p) for p, r in zip(arms["plain"], arms["recorded"])]
_FIGURES["overhead"] = float(np.median(ratios) - 1.0)
for arm, seconds in arms.items():
    _FIGURES["median step " + arm] = float(np.median(np.concatenate(seconds)))
# the recorder's own work per step, alone: 4 layers' routed ids in, one step() out
import time, torch
from moetrace.record import TraceRecorder
ids = torch.randint(0, 8, (512, 2))
with tempfile.TemporaryDirectory() as tmp:
    rec = TraceRecorder(tmp + "/t", flush_every=100, rank=0)
    start = time.perf_counter()
    for _ in range({WORK_STEPS}):
        for layer in range(4):
            rec.add_indices(layer, ids, 8, training=True)
        rec.step()
    _FIGURES["recorder work"] = (time.perf_counter() - start) / {WORK_STEPS}
    rec.close()
"""


def overhead(figures: dict[str, float]) -> dict[str, float]:
    """Step times in ms and the recording overhead in percent (median of paired ratios)."""
    return {
        "median step, no recording, pooled (ms)": figures["median step plain (s)"] * 1e3,
        "median step, recording, pooled (ms)": figures["median step recorded (s)"] * 1e3,
        "recording overhead, paired (%)": figures["overhead (s)"] * 100.0,
        "recorder work per step alone (ms)": figures["recorder work (s)"] * 1e3,
        "  as a share of a plain step (%)": figures["recorder work (s)"]
        / figures["median step plain (s)"] * 100.0,
        "peak RSS (MiB)": figures["peak RSS (MiB)"],
    }


def main(runs: int = 3) -> None:
    figures = measure(_CODE, runs=runs)
    print_figures(f"record: demo trainer step, {PAIRS} pairs x {STEPS} steps per process "
                  "(target: overhead <= 2%)", overhead(figures), runs)


if __name__ == "__main__":
    main()
