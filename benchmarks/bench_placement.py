"""Placement replay on the 350M preset, 20,000 steps, 64 GPUs (128 experts, 2 per GPU).

Targets (issue 11): replaying one policy in under 10 s; the whole ``replay`` with every
policy (forecasts included, the auto predictor) in under 2 minutes on 2 cores; peak memory
stated. Also the planner alone: ``rebalance_experts`` on 58 layers x 256 experts into 288
slots on 32 GPUs (DeepSeek-V3's shape), EPLB's policy and the default, without and with 1,000
steps of samples. And the recommendation (issue 27): ``plan --recommend`` on
sample_traces/gpt3-350m-sim.parquet with 8 GPUs (the whole grid: 45 replays and the static
baseline, the analysis and the forecasts included) in under a minute.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import measure, print_figures

_MAKE = """
from moetrace.simulate import simulate_trace
simulate_trace({path!r}, preset="gpt3-350m", steps=20_000, seed=0)
"""

_ONE = """
from moetrace.trace import read_trace
from moetrace.placement import Cluster, make_policies, replay
loads = read_trace({path!r}).loads()
for name in ("static", "window", "hindsight"):
    with timed("replay one policy: " + name):
        replay(loads, Cluster(gpus=64), make_policies([name], window=1000, predictor="auto"))
"""

_ALL = """
from moetrace.trace import read_trace
from moetrace.placement import Cluster, make_policies, replay, DEFAULT_POLICIES
from moetrace.states.analysis import analyze_loads
with timed("replay, every policy (read, analyze, replay)"):
    trace = read_trace({path!r})
    loads = trace.loads()
    analysis = analyze_loads(loads)
    result = replay(loads, Cluster(gpus=64), make_policies(DEFAULT_POLICIES, window=1000,
                    predictor="auto"), stable=analysis.stable,
                    online_stable=analysis.online_stable)
for policy in result.policies:
    _FIGURES["  of which " + policy.name] = policy.seconds
"""

_PLANNER = """
import numpy as np
from moetrace.placement import rebalance_experts
rng = np.random.default_rng(0)
weight = rng.zipf(1.5, size=(58, 256)).astype(float)
samples = rng.poisson(weight[:, None, :].clip(max=1000), (58, 1000, 256)).astype(np.float32)
for planner in ("eplb", "balanced"):
    with timed("rebalance 58 x 256 -> 288 slots, 32 GPUs, 4 nodes: " + planner):
        rebalance_experts(weight, 288, 8, 4, 32, planner=planner)
with timed("rebalance 58 x 256 -> 288 slots, 32 GPUs, 4 nodes: balanced, 1,000 samples"):
    rebalance_experts(weight, 288, 8, 4, 32, samples=samples)
"""

_RECOMMEND = """
from moetrace import pipeline
from moetrace.placement import Cluster
with timed("plan --recommend, gpt3-350m-sim.parquet, 8 GPUs (read, analyze, 46 replays)"):
    found = pipeline.recommend({path!r}, Cluster(gpus=8))
"""


def main(runs: int = 3) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "t.parquet")
        measure(_MAKE.format(path=path), runs=1, compare=False)
        print_figures("placement: one policy, gpt3-350m x 20,000 steps, 64 GPUs",
                      measure(_ONE.format(path=path), runs=runs, compare=False), runs)
        print_figures("placement: every policy, gpt3-350m x 20,000 steps, 64 GPUs",
                      measure(_ALL.format(path=path), runs=runs, compare=False), runs)
    print_figures("placement: the planner alone", measure(_PLANNER, runs=runs, compare=False),
                  runs)
    sample = str(Path(__file__).resolve().parents[1] / "sample_traces" / "gpt3-350m-sim.parquet")
    print_figures("placement: the recommendation (target: under a minute)",
                  measure(_RECOMMEND.format(path=sample), runs=runs, compare=False), runs)


if __name__ == "__main__":
    main(runs=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
