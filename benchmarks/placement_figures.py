"""`python -m benchmarks.placement_figures [--smartmoe PATH]`: the placement figures of
docs/placement.md, printed as Markdown tables.

Every figure is a ``moetrace.pipeline`` call, the same as the command named beside it:

- the default planner against EPLB's in replay (``moetrace replay TRACE --gpus G --redundant X
  [--planner eplb]``), every policy, on the bundled samples, the imbalance presets (made
  here with ``moetrace record --simulate``) and the SmartMoE trace when given;
- moves of re-plans that start from the placement in force against from-scratch re-plans
  (``--from-scratch``);
- modeled seconds per policy (the time model's defaults; the SmartMoE trace does not say its
  expert size: an assumed 8,388,608 parameters, GPT-3 Medium's FFN);
- the recommendation (``moetrace plan TRACE --gpus G --recommend``), timed;
- the measured share of random simulated traces on which the window and forecast policies
  fell below EPLB's planner (the property test's domain, more draws).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import numpy as np

from moetrace import pipeline
from moetrace.placement import Cluster, make_policies, replay

ROOT = Path(__file__).resolve().parents[1]
SMARTMOE_EXPERT = 2 * 1024 * 4096  # assumed: the trace does not say its model
POLICIES = ["static", "window", "forecast", "adaptive", "hindsight"]


@functools.cache
def _replayed(path: str, gpus: int, redundant: int, policies: tuple[str, ...],
              extra: tuple = (), **cluster):
    """``moetrace replay`` of ``path`` (once per process for the same settings: the planner
    and seconds tables read the same replay)."""
    return pipeline.replay(path, Cluster(gpus=gpus, redundant=redundant, **cluster),
                           list(policies), **dict(extra))


def _overall(result) -> dict[str, dict]:
    return {r["policy"]: r for r in result.rows() if r["layer"] is None and r["state"] == "all"}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _sec(x: float | None) -> str:
    from moetrace.display import format_seconds

    return format_seconds(x)


def traces(smartmoe: str | None, tmp: Path) -> list[tuple[str, str, int, int, dict]]:
    """(label, path, GPUs, redundant slots, extra replay settings)."""
    from moetrace.simulate import simulate_trace

    for preset in ("hotspot", "burst"):
        simulate_trace(tmp / f"{preset}.parquet", preset=preset, steps=10_000, seed=0)
    cases = [
        ("demo-real", str(ROOT / "sample_traces/demo-real.parquet"), 4, 8, {}),
        ("demo-sampled", str(ROOT / "sample_traces/demo-sampled"), 4, 4, {}),
        ("125M sample", str(ROOT / "sample_traces/gpt3-125m-sim.parquet"), 8, 8, {}),
        ("350M sample", str(ROOT / "sample_traces/gpt3-350m-sim.parquet"), 8, 8, {}),
        ("350M sample", str(ROOT / "sample_traces/gpt3-350m-sim.parquet"), 16, 16, {}),
        ("W6 rotating hotspot", str(tmp / "hotspot.parquet"), 8, 8, {}),
        ("W7 burst", str(tmp / "burst.parquet"), 8, 8, {}),
    ]
    if smartmoe:
        cases += [("SmartMoE", smartmoe, 16, 16, {"expert_params": SMARTMOE_EXPERT}),
                  ("SmartMoE", smartmoe, 16, 32, {"expert_params": SMARTMOE_EXPERT})]
    return cases


def planner_table(cases) -> str:
    out = []
    out.append("| trace | GPUs, slots | planner | " + " | ".join(POLICIES[1:]) + " |")
    out.append("|---|---|---|" + "---|" * (len(POLICIES) - 1))
    for label, path, gpus, redundant, extra in cases:
        rows = {}
        for planner in ("eplb", "balanced"):
            result = _replayed(path, gpus, redundant, tuple(POLICIES), tuple(extra.items()),
                               planner=planner)
            rows[planner] = _overall(result)
            slots = result.slots
        for planner in ("eplb", "balanced"):
            cells = []
            for name in POLICIES[1:]:
                value = rows[planner][name]["balancedness"]
                mark = ""
                if planner == "balanced":
                    diff = value - rows["eplb"][name]["balancedness"]
                    mark = f" ({100 * diff:+.2f})"
                cells.append(_pct(value) + mark)
            out.append(f"| {label} | {gpus}, {slots} | {planner} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def moves_table(cases) -> str:
    out = []
    out.append("| trace | GPUs, slots | policy | moves | from scratch (same re-plans) | "
               "from-scratch replay: moves | balancedness | from scratch |")
    out.append("|---|---|---|---|---|---|---|---|")
    for label, path, gpus, redundant, extra in cases:
        little = _replayed(path, gpus, redundant, tuple(POLICIES), tuple(extra.items()),
                           planner="balanced")  # the planner and seconds tables' replay
        fresh = _replayed(path, gpus, redundant, ("window", "forecast", "hindsight"),
                          tuple(extra.items()), planner="balanced", move_tolerance=None)
        a, b = _overall(little), _overall(fresh)
        for name in ("window", "forecast", "hindsight"):
            out.append(f"| {label} | {gpus}, {little.slots} | {name} | {a[name]['moves']:,} | "
                       f"{a[name]['moves_from_scratch']:,} | {b[name]['moves']:,} | "
                       f"{_pct(a[name]['balancedness'])} | {_pct(b[name]['balancedness'])} |")
    return "\n".join(out) + "\n"


def seconds_table(cases) -> str:
    out = []
    out.append("| trace | GPUs, slots | policy | compute saved | moves | move | net | per step |")
    out.append("|---|---|---|---|---|---|---|---|")
    for label, path, gpus, redundant, extra in cases:
        result = _replayed(path, gpus, redundant, tuple(POLICIES), tuple(extra.items()),
                           planner="balanced")
        rows = _overall(result)
        for name in POLICIES[1:]:
            r = rows[name]
            if r["net_seconds_saved"] is None:
                continue
            out.append(f"| {label} | {gpus}, {result.slots} | {name} | "
                       f"{_sec(r['compute_seconds_saved'])} | {r['moves']:,} | "
                       f"{_sec(r['move_seconds'])} | {_sec(r['net_seconds_saved'])} | "
                       f"{_sec(r['net_seconds_saved_per_step'])} |")
    return "\n".join(out) + "\n"


def recommend_table(cases) -> str:
    from moetrace.placement.recommend import describe

    out = []
    out.append("| trace | GPUs | recommendation | net saved | runner-up | static bal. |")
    out.append("|---|---|---|---|---|---|")
    seen = set()
    for label, path, gpus, redundant, extra in cases:
        if (label, gpus) in seen:
            continue
        seen.add((label, gpus))
        found = pipeline.recommend(path, Cluster(gpus=gpus), **extra)
        choice, runner = found.choice(), found.runner_up()
        out.append(f"| {label} | {gpus} | {describe(choice)} | "
                   f"{_sec(choice['net_seconds_saved'])} "
                   f"| {'-' if runner is None else describe(runner)} "
                   f"({_sec(None if runner is None else runner['net_seconds_saved'])}) | "
                   f"{_pct(found.static_row()['balancedness'])} |")
    return "\n".join(out) + "\n"


def random_traces(draws: int, seed: int = 7, seeds: int = 1) -> str:
    """The property test's domain, more draws: how often, and how far, each policy of the
    default planner fell below EPLB's planner, re-planning from the placement in force (the
    default) and from scratch (``--from-scratch``); the hindsight plan never may. ``seeds``
    sets of ``draws`` draws, of seeds ``seed``, ``seed + 1``, ...: a set is the same draws
    whatever else is asked."""
    names = ["window", "forecast:sw_avg", "hindsight"]
    modes = {"from the placement in force": {}, "from scratch": {"move_tolerance": None}}
    below = {(name, mode): [] for name in names for mode in modes}
    for offset in range(seeds):
        for loads, cluster in _random_draws(draws, seed + offset):
            eplb = _replay_means(loads, cluster.with_(planner="eplb"), names)
            for mode, change in modes.items():
                mine = _replay_means(loads, cluster.with_(**change), names)
                for name in names:
                    below[name, mode].append(mine[name] - eplb[name])
    out = ["| policy | re-plans | draws below EPLB's planner | by more than 0.1 point | worst "
           "| mean difference |", "|---|---|---|---|---|---|"]
    for (name, mode), diffs in below.items():
        diffs = np.array(diffs)
        out.append(f"| {name} | {mode} | {(diffs < -1e-6).sum()} of {len(diffs):,} | "
                   f"{(diffs < -1e-3).sum()} | {100 * diffs.min():+.2f} points | "
                   f"{100 * diffs.mean():+.2f} points |")
    return "\n".join(out) + "\n"


def _random_draws(draws: int, seed: int):
    """(loads, cluster) of each random draw: the slow property test's domain."""
    from moetrace.simulate import make_config, simulate_counts
    from moetrace.trace.shares import Loads

    rng = np.random.default_rng(seed)
    for _ in range(draws):
        experts = int(rng.choice([8, 16, 32]))
        gpus = int(rng.choice([2, 4, 8]))
        nodes, groups = (2, 4) if rng.integers(2) else (1, 1)
        redundant = int(rng.choice([0, gpus, 2 * gpus]))
        config = make_config("gpt3-125m", steps=2000, layers=2, experts=experts,
                             tokens_per_step=int(rng.choice([4096, 65536])),
                             top_k=int(rng.choice([1, 2])))
        counts, _ = simulate_counts(config, seed=int(rng.integers(10**6)))
        yield (Loads(np.arange(2000), counts, (0, 1)),
               Cluster(gpus=gpus, nodes=nodes, groups=groups, redundant=redundant))


def _replay_means(loads, cluster: Cluster, names: list[str]) -> dict[str, float]:
    """Each policy's replay balancedness (mean over layers and steps), interval and window
    500."""
    result = replay(loads, cluster, make_policies(names), interval=500, window=500)
    return {p.name: float(p.balancedness.mean()) for p in result.policies}


#: The tables by name: (title, function of the cases returning the Markdown table).
TABLES = {
    "planner": ("The default planner against EPLB's, in replay", planner_table),
    "moves": ("Moves: from the placement in force against from scratch", moves_table),
    "seconds": ("Modeled seconds against the static placement (default time model)",
                seconds_table),
    "recommend": ("The setting to pick (plan --recommend)", recommend_table),
}
RANDOM_TITLE = ("Random simulated traces ({draws:,} draws: 2 layers x 8-32 experts, 2,000 "
                "steps, 2-8 GPUs, 0-2 redundant slots per GPU, global or 2 nodes x 4 groups)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.placement_figures",
                                     description=__doc__)
    parser.add_argument("--smartmoe", metavar="PATH", help="the imported SmartMoE trace")
    parser.add_argument("--draws", type=int, default=200, help="random simulated traces")
    parser.add_argument("--seed", type=int, default=7,
                        help="of the random traces (7, with --seeds 10: the docs' table)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="sets of random traces, of seeds --seed, --seed + 1, ...")
    parser.add_argument("--only", metavar="NAMES",
                        help="planner, moves, seconds, recommend, random (comma-separated)")
    args = parser.parse_args()
    only = set((args.only or "planner,moves,seconds,recommend,random").split(","))
    with tempfile.TemporaryDirectory() as tmp:
        cases = traces(args.smartmoe, Path(tmp))
        for name, (title, table) in TABLES.items():
            if name in only:
                print(f"\n### {title}\n")
                print(table(cases), end="")
    if "random" in only:
        print(f"\n### {RANDOM_TITLE.format(draws=args.draws * args.seeds)}\n")
        print(random_traces(args.draws, args.seed, args.seeds), end="")


if __name__ == "__main__":
    main()
