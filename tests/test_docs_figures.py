"""Documented figures cannot go stale: every figures block in README.md and docs/ is made by
`python -m benchmarks docs-figures`, and the ones made from shipped data are compared with
what the current code gives (the quick one in every run, the others as slow tests)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import bench_docs_figures as figures


def test_every_block_has_one_maker_and_every_maker_one_block():
    documented = figures.documented()
    assert set(documented) == set(figures.FIGURES)
    for name, (file, _) in documented.items():
        assert figures.FIGURES[name].file == file, name


def test_a_block_is_replaced_and_nothing_else():
    text = ("a 1%\n<!-- figures: x -->\nold 2%\n<!-- /figures -->\nb 3%\n"
            "<!-- figures: y -->\nkeep\n<!-- /figures -->\n")
    out = figures.replace(text, "x", "new 4%\n")
    assert out == text.replace("old 2%", "new 4%")
    assert figures.blocks(out) == {"x": "new 4%\n", "y": "keep\n"}
    with pytest.raises(ValueError, match="twice"):
        figures.blocks(text + text)


def _tier(tier: str) -> list[str]:
    return [name for name, f in figures.FIGURES.items() if f.tier == tier]


def _current(name):
    missing = figures.FIGURES[name].missing()
    if missing:
        pytest.skip(missing)
    assert figures.FIGURES[name].make() == figures.documented()[name][1], (
        f"docs differ from the run: python -m benchmarks docs-figures {name}")


@pytest.mark.parametrize("name", _tier(figures.QUICK))
def test_quick_figures_are_current(name):
    _current(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", _tier(figures.SLOW))
def test_slow_figures_are_current(name):
    _current(name)


def test_every_figure_has_a_known_tier():
    assert {f.tier for f in figures.FIGURES.values()} <= {figures.QUICK, figures.SLOW,
                                                          figures.COMMAND}


def test_check_reports_a_stale_block_and_changes_nothing(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (tmp_path / "README.md").write_text("<!-- figures: q -->\nstale\n<!-- /figures -->\n")
    monkeypatch.setattr(figures, "ROOT", tmp_path)
    monkeypatch.setattr(figures, "FIGURES", {
        "q": figures.Figure("README.md", figures.QUICK, lambda: "fresh\n"),
        "r": figures.Figure("README.md", figures.QUICK, lambda: "x\n",
                            needs="MOETRACE_NOT_SET_HERE")})
    monkeypatch.delenv("MOETRACE_NOT_SET_HERE", raising=False)
    assert figures.run([], check=True) == 1
    assert "stale" in (tmp_path / "README.md").read_text()
    assert figures.run([], check=False) == 0
    assert (tmp_path / "README.md").read_text() == "<!-- figures: q -->\nfresh\n<!-- /figures -->\n"
    assert figures.run([], check=True) == 0


def test_the_command_runs_from_the_benchmarks_entry(tmp_path):
    env = {**os.environ, "MOETRACE_SMARTMOE": ""}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "docs-figures", "--check",
                           "readme-python", "importing-smartmoe"],
                          capture_output=True, text=True, cwd=figures.ROOT, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "readme-python: README.md is current" in proc.stdout
    assert "importing-smartmoe: skipped (MOETRACE_SMARTMOE is not set)" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks", "docs-figures", "nope"],
                         capture_output=True, text=True, cwd=figures.ROOT)
    assert bad.returncode == 2 and "unknown figure nope" in bad.stderr


def test_the_peers_table_shows_verdicts_the_cells_left_out_and_every_miss():
    """benchmarks/bench_peers.py's docs table from hand-made cells: a letter per verdict, the
    best trailing mean, a cell below the minimum evidence listed as left out (no row), and
    each peer auto is worse than with its figures."""
    from types import SimpleNamespace

    from benchmarks import bench_peers as peers
    from moetrace.evidence import TOO_FEW

    def v(verdict, origins=12, pairs=40, mean=0.0, lo=-0.001, hi=0.001):
        return {"origins": origins, "pairs": pairs, "mean": mean, "lo": lo, "hi": hi,
                "verdict": verdict}

    coverage = SimpleNamespace(forecasts=40, stated=38, pooled=0.8125, layers=(0.7, 0.9),
                               experts=(0.5, 1.0), error_ratio=1.5, rank_correlation=None)
    ranked = peers.Cell(1000, "stable", 0.0150, {
        "last": (0.0200, v("better")), "ewma(0.2)": (0.0151, v("no clear difference")),
        "ewma(0.3)": (0.0152, v("no clear difference")), "ets": (0.0170, v("better")),
        "mean(2)": (0.0190, v("better")),
        "mean(9)": (0.0140, v("worse", mean=0.001, lo=0.0002, hi=0.0018))}, coverage,
        np.ones((12, 4), dtype=bool))
    few = peers.Cell(2000, "transient", 0.2, {name: (0.2, v(TOO_FEW, origins=1, pairs=1))
                                              for name in ranked.peers}, None,
                      np.ones((1, 4), dtype=bool))
    text = peers.table({"demo-real.parquet": [ranked, few]})
    lines, flat = text.splitlines(), " ".join(text.split())  # flat: wrapped lines joined
    assert lines[2] == ("| demo-real | 1,000 | stable | 12 / 40 | 1.50% | 2.00% b | 1.51% = | "
                        "1.52% = | 1.70% b | mean(9) 1.40% W | mean(9) | 81.2% |")
    assert "Left out, too few origins to judge: demo-real, 2,000 steps, transient (1 origin)." \
        in flat
    assert ("- demo-real, 1,000 steps, stable: auto 1.50% against mean(9) 1.40%; difference "
            "+0.100 points, 95% interval +0.020 to +0.180") in flat
    assert ("| demo-real | 1,000 | stable | 40 (38) | 81.2% | 70-90% | 50-100% | 1.50x | n/a |"
            in lines)
    assert sum(line.startswith("| demo-real") for line in lines) == 2  # one row per table
