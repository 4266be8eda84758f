"""`python -m benchmarks docs-figures [--check] [NAME ...]`: the figures README.md and docs/
show from a run, made by one command.

A documented figure lives in a block of Markdown between ``<!-- figures: NAME -->`` and
``<!-- /figures -->``; :data:`FIGURES` holds, for every NAME, the function that makes the
block's text from a run of the current code. Without ``--check`` the command rewrites every
block it can make; with ``--check`` it changes nothing and exits 1 when a block differs from
what the run gives, printing the difference. A figure that needs data moetrace does not ship
(SmartMoE's public trace: ``MOETRACE_SMARTMOE`` set to its ``moe_trace/`` folder or to a trace
imported from it) is skipped with a line saying so when the data is absent.

``tests/test_docs_figures.py`` checks that every block has a maker and every maker one block,
and compares the figures with the docs in ``make test`` by their tier (:data:`QUICK` ones in
every run, :data:`SLOW` ones as slow tests, where their data is at hand; :data:`COMMAND` ones
only by this command).

Timings are not figures of this kind: they differ run to run, so each is a benchmark's median
printed with its command where the docs show it.
"""

from __future__ import annotations

import argparse
import atexit
import difflib
import functools
import os
import re
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "sample_traces"
BLOCK = re.compile(r"(<!-- figures: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)",
                   re.S)


#: How a figure is tested: in every run, as a slow test, or only by the command (figures of
#: trained models: a CPU with other vector instructions may train a different LSTM, and the
#: 20,000-step ARIMA and LSTM backtests would double the suite's time).
QUICK, SLOW, COMMAND = "quick", "slow", "command"


@dataclass(frozen=True)
class Figure:
    """One documented block: the file it is in, how it is tested (:data:`QUICK`, :data:`SLOW`
    or :data:`COMMAND`), its maker, and the environment variable naming data it needs (or
    None)."""

    file: str
    tier: str
    make: Callable[[], str]
    needs: str | None = None
    #: a package the maker imports that moetrace does not install (None: none)
    module: str | None = None

    def missing(self) -> str | None:
        """Why the figure cannot be made here (None: it can)."""
        import importlib.util

        if self.needs and not os.environ.get(self.needs):
            return f"{self.needs} is not set"
        if self.module and importlib.util.find_spec(self.module) is None:
            return f"{self.module} is not installed: pip install 'moetrace[bench]'"
        return None


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _table(head: str, rows: list[str]) -> str:
    """A Markdown table: ``head``'s columns (``|``-separated), a rule, the rows."""
    columns = head.count("|") - 1
    return f"{head}\n|{' --- |' * columns}\n" + "\n".join(rows) + "\n"


#: The committed samples the tables run on: label -> file.
SAMPLE_FILES = {"demo-real": "demo-real.parquet",
                "gpt3-350m-sim sample": "gpt3-350m-sim.parquet",
                "gpt3-125m-sim sample": "gpt3-125m-sim.parquet"}
VERDICT_ORDER = ("better", "no clear difference", "worse")


def _grouped(verdicts: dict[str, str]) -> dict[str, list[str]]:
    """Predictor -> verdict as verdict -> predictors, in :data:`VERDICT_ORDER`."""
    said: dict[str, list[str]] = {}
    for name, verdict in verdicts.items():
        said.setdefault(verdict, []).append(name)
    return {v: said[v] for v in VERDICT_ORDER if v in said}


def _against(result, subject: str, others, errors: dict, cell: np.ndarray, h: int) -> str:
    """``subject``'s paired verdict against each of ``others`` on ``cell``, in words."""
    from moetrace.evidence import compare

    said = _grouped({name: compare(errors[subject], errors[name], cell, steps=result.origins,
                                   horizon=h).verdict for name in others})
    return "; ".join(f"{v} {'from' if v == 'no clear difference' else 'than'} "
                     f"{', '.join(names)}" for v, names in said.items())


@functools.cache
def _smartmoe() -> Path:
    """SmartMoE's trace: an imported Parquet file as given, or the raw folder imported once
    per run into a temporary directory (removed at exit)."""
    given = Path(os.environ["MOETRACE_SMARTMOE"])
    if given.is_file():
        return given
    from moetrace.record.importers import import_trace

    tmp = tempfile.mkdtemp(prefix="moetrace-figures-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    out = Path(tmp) / "smartmoe.parquet"
    import_trace("smartmoe", given, out)
    return out


# --- README.md ------------------------------------------------------------------------------


def readme_python() -> str:
    """The paragraph under README's "From Python" example: what its two prints show."""
    import moetrace
    from moetrace.states import analyze_loads

    loads = moetrace.read_trace(SAMPLES / "gpt3-350m-sim.parquet").loads()
    analysis = analyze_loads(loads)
    result = moetrace.backtest(loads, ["naive", "sw_avg", "auto"], [1000],
                               stable=analysis.stable)
    rows = {r["predictor"]: r for r in result.summary().filter(state="stable").to_dicts()}
    auto, naive, sw_avg = rows["auto"], rows["naive"], rows["sw_avg"]
    bound = auto["constant_bound"]
    return (f"prints `{analysis.verdict}` and a table whose stable rows read auto "
            f"{_pct(auto['error_rate'])}\n(95% interval {100 * auto['lower']:.2f}-"
            f"{_pct(auto['upper'])}), naive {_pct(naive['error_rate'])}, sw_avg "
            f"{_pct(sw_avg['error_rate'])} (the mean over origins of the layer-mean\n"
            f"per-step error rate, docs/metrics.md), each beside the constant bound, "
            f"{_pct(bound)}: no forecast held\nconstant over the 1,000 steps, naive's "
            f"included, scores below it there.\n")


# --- docs/simulation.md: stable-state realism ----------------------------------------------


def simulation_realism() -> str:
    """The paper's sliding-window average on stable runs (2 layers, 16,000 steps, seed 1, no
    transient, origins every 500 steps) of both GPT-3 presets, against the multinomial floor."""
    from moetrace.evidence import estimate
    from moetrace.pipeline import analyze, backtest
    from moetrace.simulate import simulate_trace

    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("gpt3-350m", "gpt3-125m"):
            path = simulate_trace(Path(tmp) / f"{preset}.parquet", preset=preset, steps=16_000,
                                  seed=1, layers=2, transient=0)
            result = backtest(path, predictors=["sw_avg"], stride=500, placement=None).result
            errors = [estimate(result.scores[("sw_avg", h)].metrics["error_rate"],
                               result.scores[("sw_avg", h)].fits[:, None]
                               & np.ones(result.stable.shape[1:], bool)).centre
                      for h in (1000, 2000)]
            floor = float(np.nanmean(analyze(path).floors()["stable"]))
            found[preset] = (*errors, floor)
    a, b, f = found["gpt3-350m"]
    c, d, g = found["gpt3-125m"]
    return (f"{_pct(a)} at H = 1,000 and {_pct(b)} at H = 2,000, with the multinomial floor at "
            f"{_pct(f)}; the paper\nreports about 1.3% and 1.7%. The same settings give 125M "
            f"{_pct(c)} / {_pct(d)} (floor {_pct(g)}).\n")


# --- docs/analysis.md: segmentation against the simulator's truth -------------------------

#: (preset, label, steps, seeds) of the accuracy table.
SEGMENTATION = (("gpt3-125m", "125M (6 x 16)", 10_000, 4),
                ("gpt3-350m", "350M (12 x 128)", 6_000, 3),
                ("gpt3-125m", "125M (6 x 16)", 3_000, 8),
                ("gpt3-350m", "350M (12 x 128)", 2_000, 8))


def analysis_accuracy() -> str:
    """Per preset and length, over seeds from 0, with the defaults: layers whose detected
    boundary is within 5% of the length of the true one, the worst boundary error, the median
    offset, and the share of step labels right (worst trace and mean)."""
    from moetrace.simulate import make_config, simulate_counts
    from moetrace.states import analyze_loads
    from moetrace.trace import Loads

    rows = []
    for preset, label, steps, seeds in SEGMENTATION:
        offsets, right = [], []
        for seed in range(seeds):
            config = make_config(preset, steps=steps)
            counts, truth = simulate_counts(config, seed)
            loads = Loads(np.arange(steps), counts, tuple(range(config.n_layers)))
            analysis = analyze_loads(loads, top_k=config.top_k)
            offsets += [np.nan if s is None or b is None else s - b
                        for s, b in zip((la.stable_from for la in analysis.layers),
                                        truth.boundaries)]
            right.append(float((analysis.stable == truth.stable_mask(steps)).mean()))
        offsets = np.array(offsets, dtype=float)
        near = np.mean(np.abs(offsets) <= 0.05 * steps)  # NaN (none found) counts as far
        worst = np.nanmax(np.abs(offsets)) / steps if np.isfinite(offsets).any() else np.nan
        median = np.nanmedian(offsets)
        rows.append(f"| {label}, {steps:,} | {seeds} | {near:.0%} | {100 * worst:.1f}% | "
                    f"{median:+.0f} steps | {100 * min(right):.1f}% / "
                    f"{100 * np.mean(right):.1f}% |")
    return _table("| preset (layers x experts), steps | seeds | layers with boundary within 5% "
                  "of length | worst boundary error (of length) | median offset (detected - "
                  "true) | labels right, worst trace / mean |", rows)


# --- docs/predictors.md: auto against the other predictors ----------------------------------

ACCURACY = ("auto", "drift", "sw_avg", "naive")


def accuracy_rows(label: str, trace, predictors=ACCURACY) -> list[str]:
    """Table rows of one trace: per ranked (horizon, state) cell the centre of every predictor
    on the cell's pairs, the constant bound, and auto's paired verdict against each other."""
    from moetrace.evidence import enough, estimate
    from moetrace.pipeline import backtest

    result = backtest(trace, predictors=list(predictors), placement=None).result
    rows, masks = [], result.state_masks()
    for h in result.horizons:
        errors = {name: result.scores[(name, h)].metrics["error_rate"] for name in predictors}
        for state in ("stable", "transient"):
            cell = masks[state] & result.scores[(predictors[0], h)].fits[:, None]
            origins, n_pairs = int(cell.any(axis=1).sum()), int(cell.sum())
            if not enough(origins, n_pairs):
                continue
            centres = [_pct(estimate(errors[name], cell).centre) for name in predictors]
            bound = estimate(result.constant_bound[h], cell).centre
            said = _against(result, predictors[0], predictors[1:], errors, cell, h)
            rows.append(f"| {label} | {h:,} | {state} | {origins} / {n_pairs} | "
                        f"{' | '.join(centres)} | {_pct(bound)} | {said} |")
    return rows


_ACCURACY_HEAD = ("| trace | horizon | state | origins / pairs | auto | drift | sw_avg | naive | "
                  "constant bound | auto against (paired) |")


def predictors_accuracy_samples() -> str:
    return _table(_ACCURACY_HEAD, [row for label, name in SAMPLE_FILES.items()
                                   for row in accuracy_rows(label, SAMPLES / name)])


def predictors_accuracy_smartmoe() -> str:
    return _table(_ACCURACY_HEAD, accuracy_rows("SmartMoE, real", _smartmoe()))


# --- docs/predictors.md: sw_avg's window ---------------------------------------------------

WINDOWS = (100, 200, 500, 1000, 2000)


def sw_avg_windows() -> str:
    """sw_avg at each window: stable / transient centre per trace and horizon (the report's
    defaults otherwise; every window scored on the same pairs)."""
    from moetrace.evidence import estimate
    from moetrace.pipeline import backtest
    from moetrace.predictors import PredictorOptions
    from moetrace.simulate import simulate_trace

    def rows(label, trace):
        results = {w: backtest(trace, predictors=["sw_avg"], placement=None,
                               options=PredictorOptions(window=w)).result for w in WINDOWS}
        first = results[WINDOWS[0]]
        masks, out = first.state_masks(), []
        for h in first.horizons:
            cells = []
            for w in WINDOWS:
                scores = results[w].scores[("sw_avg", h)]
                centres = [estimate(scores.metrics["error_rate"],
                                    masks[state] & scores.fits[:, None]).centre
                           for state in ("stable", "transient")]
                cells.append(" / ".join("-" if not np.isfinite(c) else f"{100 * c:.2f}"
                                        for c in centres) + "%")
            out.append(f"| {label} | {h:,} | {' | '.join(cells)} |")
        return out

    table = []
    with tempfile.TemporaryDirectory() as tmp:
        path = simulate_trace(Path(tmp) / "3.parquet", preset="gpt3-350m", steps=20_000,
                              seed=1, layers=3)
        table += rows("gpt3-350m, 3 layers x 20,000 steps", path)
    for label in ("gpt3-350m-sim sample", "gpt3-125m-sim sample", "demo-real"):
        table += rows(label, SAMPLES / SAMPLE_FILES[label])
    head = " | ".join(f"w = {w:,}" + (" (default)" if w == 1000 else "") for w in WINDOWS)
    return _table(f"| trace | horizon | {head} |", table)


# --- docs/predictors.md: the paper's predictors -------------------------------------------

PAPER = ("naive", "sw_avg", "arima", "lstm")


def paper_rows(label: str, trace) -> list[str]:
    """Rows of one trace: the centre of the paper's predictors per horizon and state, each on
    every pair of the cell (a fallback forecast scored as what it was, and the origins at
    which the predictor fell back shown), with the constant bound of the same pairs."""
    from moetrace.evidence import estimate
    from moetrace.pipeline import backtest

    result = backtest(trace, predictors=list(PAPER), placement=None).result
    masks, rows = result.state_masks(), []
    for h in result.horizons:
        for state in ("stable", "transient"):
            cell = masks[state] & result.scores[("naive", h)].fits[:, None]
            if not cell.any():
                continue
            cells = []
            for name in PAPER:
                found = estimate(result.scores[(name, h)].metrics["error_rate"], cell)
                fell = sum(reason is not None for reason, used
                           in zip(result.fallbacks[name], cell.any(axis=1)) if used)
                cells.append(_pct(found.centre) + (f" ({fell} fell back)" if fell else ""))
            rows.append(f"| {label} | {h:,} {state} | {int(cell.any(axis=1).sum())}, "
                        f"{int(cell.sum())} | {' | '.join(cells)} | "
                        f"{_pct(estimate(result.constant_bound[h], cell).centre)} |")
            label = ""
    return rows


def predictors_paper() -> str:
    from moetrace.simulate import simulate_trace

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, layers, seed in (("gpt3-350m, 12 layers x 20,000 steps", None, 0),
                                    ("gpt3-350m, 3 layers x 20,000 steps", 3, 1)):
            path = simulate_trace(Path(tmp) / f"{seed}.parquet", preset="gpt3-350m",
                                  steps=20_000, seed=seed, layers=layers)
            rows += paper_rows(label, path)
    for label in ("gpt3-350m-sim sample", "gpt3-125m-sim sample", "demo-real"):
        rows += paper_rows(label, SAMPLES / SAMPLE_FILES[label])
    return _table("| trace | horizon, state | origins, pairs | naive | sw_avg | arima | lstm | "
                  "constant bound |", rows)


# --- docs/predictors.md: where the LSTM runs, wins and loses -------------------------------

LSTM_OTHERS = ("naive", "sw_avg", "auto")
_LSTM_HEAD = ("| trace (origins run) | horizon, state | origins, pairs | lstm | naive | sw_avg | "
              "auto | lstm against (paired) |")


def lstm_rows(label: str, trace) -> list[str]:
    """Rows of one trace: the LSTM against naive, sw_avg and auto on the pairs of the origins
    where it made its own forecast (every predictor on the same pairs, the report's centre),
    with its paired verdict against each ("-" below the minimum evidence)."""
    from moetrace.evidence import enough, estimate
    from moetrace.pipeline import backtest

    result = backtest(trace, predictors=["lstm", *LSTM_OTHERS], placement=None).result
    ran = np.array([reason is None for reason in result.fallbacks["lstm"]])
    rows, first = [], f"{label} ({ran.sum()} of {len(ran)})"
    masks = result.state_masks()
    for h in result.horizons:
        errors = {name: result.scores[(name, h)].metrics["error_rate"]
                  for name in ("lstm", *LSTM_OTHERS)}
        for state in ("stable", "transient"):
            cell = masks[state] & result.scores[("lstm", h)].fits[:, None] & ran[:, None]
            origins, pairs = int(cell.any(axis=1).sum()), int(cell.sum())
            if not pairs:
                continue
            centres = [_pct(estimate(errors[name], cell).centre) for name in errors]
            verdicts = (_against(result, "lstm", LSTM_OTHERS, errors, cell, h)
                        if enough(origins, pairs) else "too few to rank")
            rows.append(f"| {first} | {h:,} {state} | {origins}, {pairs} | "
                        f"{' | '.join(centres)} | {verdicts} |")
            first = ""
    return rows


def predictors_lstm() -> str:
    from moetrace.simulate import simulate_trace

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        six = simulate_trace(Path(tmp) / "350m6k.parquet", preset="gpt3-350m", steps=6000)
        rows += lstm_rows("350M 12 x 128 x 6,000", six)
    for label in ("demo-real", "gpt3-350m-sim sample"):
        rows += lstm_rows(label, SAMPLES / SAMPLE_FILES[label])
    return _table(_LSTM_HEAD, rows)


def predictors_lstm_smartmoe() -> str:
    return _table(_LSTM_HEAD, lstm_rows("SmartMoE, real", _smartmoe()))


def predictors_peers() -> str:
    """auto against the simple peers on every trace of the suite (benchmarks/bench_peers.py:
    its cells, as the docs' table)."""
    from benchmarks import bench_peers

    with tempfile.TemporaryDirectory() as tmp:
        found = {label: bench_peers.cells(path)[0]
                 for label, path in bench_peers.suite(tmp, str(_smartmoe()))}
    return bench_peers.table(found)


# --- docs/placement.md: benchmarks/placement_figures.py's tables --------------------------


@functools.cache
def _placement_cases() -> list:
    """benchmarks/placement_figures.py's cases (SmartMoE's included), its presets simulated
    once per run into a directory removed at exit, so that the tables share their replays."""
    from benchmarks import placement_figures

    tmp = tempfile.mkdtemp(prefix="moetrace-figures-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    return placement_figures.traces(str(_smartmoe()), Path(tmp))


def _placement(name: str) -> Callable[[], str]:
    """A table of benchmarks/placement_figures.py over its cases."""

    def make() -> str:
        from benchmarks import placement_figures

        return placement_figures.TABLES[name][1](_placement_cases())

    return make


def placement_random() -> str:
    from benchmarks import placement_figures

    return placement_figures.random_traces(200, seed=7, seeds=10)


# --- docs/importing.md: SmartMoE's bottom line -----------------------------------------------


def importing_smartmoe() -> str:
    """The bottom line of `moetrace report smartmoe.parquet` (default settings), in words."""
    from moetrace.pipeline import build_report

    with tempfile.TemporaryDirectory() as tmp:
        document = build_report(_smartmoe(), Path(tmp) / "report").document
    lines = []
    for row in document["bottom_line"]:
        if row["state"] != "stable":
            continue
        head = (f"At {row['horizon']:,} steps, stable state, over {row['origins']} origins "
                f"and {row['pairs']} (origin, layer) pairs: ")
        if not row["ranked"]:
            lines.append(head + f"{row['reason']}.")
            continue
        parts = [f"no clear difference from it: {', '.join(names)}"
                 if verdict == "no clear difference"
                 else f"{verdict} than the best: {', '.join(names)}"
                 for verdict, names in _grouped(row["verdicts"]).items()]
        fell = {name: n for name, n in row["fell_back"].items() if n}
        fallback = ("; fell back: " + ", ".join(f"{name} at {n} of {row['origins']} origins"
                                                 for name, n in fell.items())) if fell else ""
        lines.append(head + f"best {row['best']}, {_pct(row['error_rate'])} "
                     f"({100 * row['error_rate_lower']:.2f}-{_pct(row['error_rate_upper'])}); "
                     + "; ".join(parts) + f"{fallback}; the constant bound "
                     f"{_pct(row['constant_bound'])}.")
    bullets = "".join(textwrap.fill(line, 95, initial_indent="- ", subsequent_indent="  ",
                                    break_on_hyphens=False) + "\n"
                      for line in lines)
    return bullets + "\n" + textwrap.fill(f"The headline: \"{document['headline']}\"", 95,
                                        break_on_hyphens=False) + "\n"


#: Every documented block by name.
FIGURES: dict[str, Figure] = {
    "readme-python": Figure("README.md", QUICK, readme_python),
    "simulation-realism": Figure("docs/simulation.md", SLOW, simulation_realism),
    "analysis-accuracy": Figure("docs/analysis.md", SLOW, analysis_accuracy),
    "predictors-sw-avg-windows": Figure("docs/predictors.md", SLOW, sw_avg_windows),
    "predictors-accuracy-samples": Figure("docs/predictors.md", SLOW,
                                          predictors_accuracy_samples),
    "predictors-accuracy-smartmoe": Figure("docs/predictors.md", SLOW,
                                           predictors_accuracy_smartmoe, "MOETRACE_SMARTMOE"),
    "predictors-paper": Figure("docs/predictors.md", COMMAND, predictors_paper),
    "predictors-lstm": Figure("docs/predictors.md", COMMAND, predictors_lstm),
    "predictors-peers": Figure("docs/predictors.md", COMMAND, predictors_peers,
                               "MOETRACE_SMARTMOE", "statsforecast"),
    "predictors-lstm-smartmoe": Figure("docs/predictors.md", COMMAND, predictors_lstm_smartmoe,
                                       "MOETRACE_SMARTMOE"),
    **{f"placement-{name}": Figure("docs/placement.md", COMMAND, _placement(name),
                                   "MOETRACE_SMARTMOE")
       for name in ("planner", "moves", "seconds", "recommend")},
    "placement-random": Figure("docs/placement.md", COMMAND, placement_random),
    "importing-smartmoe": Figure("docs/importing.md", COMMAND, importing_smartmoe,
                                 "MOETRACE_SMARTMOE"),
}


def blocks(text: str) -> dict[str, str]:
    """Name -> body of every figures block in a Markdown text (a name twice is an error)."""
    found: dict[str, str] = {}
    for match in BLOCK.finditer(text):
        name = match["name"]
        if name in found:
            raise ValueError(f"figures block {name} appears twice")
        found[name] = match["body"]
    return found


def documented() -> dict[str, tuple[str, str]]:
    """Name -> (file, body) of every figures block in README.md and docs/*.md."""
    found: dict[str, tuple[str, str]] = {}
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for name, body in blocks(path.read_text()).items():
            if name in found:
                raise ValueError(f"figures block {name} in both {found[name][0]} and "
                                 f"{path.relative_to(ROOT)}")
            found[name] = (str(path.relative_to(ROOT)), body)
    return found


def replace(text: str, name: str, body: str) -> str:
    """``text`` with the body of block ``name`` replaced."""
    return BLOCK.sub(lambda m: m.group(1) + body + m.group(4) if m["name"] == name
                     else m.group(0), text)


def run(names: list[str], check: bool) -> int:
    """Make the named figures (all when none), rewrite or check their blocks; the exit code."""
    known = documented()
    differ = 0
    for name in names or list(FIGURES):
        figure = FIGURES[name]
        missing = figure.missing()
        if missing:
            print(f"{name}: skipped ({missing})")
            continue
        if name not in known:
            print(f"{name}: no block in {figure.file}")
            differ += 1
            continue
        made = figure.make()
        path = ROOT / figure.file
        if made == known[name][1]:
            print(f"{name}: {figure.file} is current")
            continue
        if check:
            differ += 1
            print(f"{name}: {figure.file} differs from the run:")
            sys.stdout.writelines(difflib.unified_diff(
                known[name][1].splitlines(True), made.splitlines(True), "documented", "run"))
        else:
            path.write_text(replace(path.read_text(), name, made))
            print(f"{name}: {figure.file} rewritten")
    return 1 if differ else 0


def cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks docs-figures",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"figures to make: {', '.join(FIGURES)} (default: all)")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 where a block differs from the run")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(FIGURES))
    if unknown:
        parser.error(f"unknown figure {unknown[0]} (known: {', '.join(FIGURES)})")
    np.seterr(all="ignore")
    raise SystemExit(run(args.names, args.check))


def main(runs: int = 1) -> None:  # noqa: ARG001 - the benchmarks' common entry
    cli([])
