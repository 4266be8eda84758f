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
and compares the fast figures with the docs in ``make test`` (the slower ones as slow tests).

Timings are not figures of this kind: they differ run to run, so each is a benchmark's median
printed with its command where the docs show it.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
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


@dataclass(frozen=True)
class Figure:
    """One documented block: the file it is in, whether it is quick enough for every test run,
    the environment variable naming data it needs (or None), and its maker."""

    file: str
    fast: bool
    make: Callable[[], str]
    needs: str | None = None


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _smartmoe() -> Path:
    """SmartMoE's trace: an imported Parquet file as given, or the raw folder imported once
    into a temporary file."""
    given = Path(os.environ["MOETRACE_SMARTMOE"])
    if given.is_file():
        return given
    out = Path(tempfile.mkdtemp(prefix="moetrace-figures-")) / "smartmoe.parquet"
    from moetrace.record.importers import import_trace

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


# --- docs/predictors.md: auto against the other predictors ----------------------------------

ACCURACY = ("auto", "drift", "sw_avg", "naive")
VERDICT_ORDER = ("better", "no clear difference", "worse")


def accuracy_rows(label: str, trace, predictors=ACCURACY) -> list[str]:
    """Table rows of one trace: per ranked (horizon, state) cell the centre of every predictor
    on the cell's pairs, the constant bound, and auto's paired verdict against each other."""
    from moetrace.evidence import compare, enough, estimate
    from moetrace.pipeline import backtest

    result = backtest(trace, predictors=list(predictors), placement=None).result
    rows = []
    for h in result.horizons:
        masks = result.state_masks()
        for state in ("stable", "transient"):
            pairs = masks[state]
            scores = {name: result.scores[(name, h)] for name in predictors}
            cell = pairs & scores["auto"].fits[:, None]
            errors = {name: s.metrics["error_rate"] for name, s in scores.items()}
            origins, n_pairs = int(cell.any(axis=1).sum()), int(cell.sum())
            if not enough(origins, n_pairs):
                continue
            centres = [_pct(estimate(errors[name], cell).centre) for name in predictors]
            bound = estimate(result.constant_bound[h], cell).centre
            verdicts: dict[str, list[str]] = {}
            for name in predictors[1:]:
                verdict = compare(errors["auto"], errors[name], cell, steps=result.origins,
                                  horizon=h).verdict
                verdicts.setdefault(verdict, []).append(name)
            said = "; ".join(f"{verdict} {'than' if verdict in ('better', 'worse') else 'from'}"
                             f" {', '.join(verdicts[verdict])}" for verdict in VERDICT_ORDER
                             if verdict in verdicts)
            rows.append(f"| {label} | {h:,} | {state} | {origins} / {n_pairs} | "
                        f"{' | '.join(centres)} | {_pct(bound)} | {said} |")
    return rows


_ACCURACY_HEAD = ("| trace | horizon | state | origins / pairs | auto | drift | sw_avg | naive | "
                  "constant bound | auto against (paired) |\n"
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")


def predictors_accuracy_samples() -> str:
    rows = []
    for label, name in (("demo-real", "demo-real.parquet"),
                        ("gpt3-350m-sim sample", "gpt3-350m-sim.parquet"),
                        ("gpt3-125m-sim sample", "gpt3-125m-sim.parquet")):
        rows += accuracy_rows(label, SAMPLES / name)
    return _ACCURACY_HEAD + "\n".join(rows) + "\n"


def predictors_accuracy_smartmoe() -> str:
    return _ACCURACY_HEAD + "\n".join(accuracy_rows("SmartMoE, real", _smartmoe())) + "\n"


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
        said = {}
        for name, verdict in row["verdicts"].items():
            said.setdefault(verdict, []).append(name)
        parts = [f"{verdict} than the best: {', '.join(said[verdict])}"
                 if verdict != "no clear difference"
                 else f"no clear difference from it: {', '.join(said[verdict])}"
                 for verdict in VERDICT_ORDER if verdict in said]
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
    "readme-python": Figure("README.md", True, readme_python),
    "predictors-accuracy-samples": Figure("docs/predictors.md", False,
                                          predictors_accuracy_samples),
    "predictors-accuracy-smartmoe": Figure("docs/predictors.md", False,
                                           predictors_accuracy_smartmoe, "MOETRACE_SMARTMOE"),
    "importing-smartmoe": Figure("docs/importing.md", False, importing_smartmoe,
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
        if figure.needs and not os.environ.get(figure.needs):
            print(f"{name}: skipped ({figure.needs} is not set)")
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
