"""The bottom line's rules: paired verdicts, the minimum evidence, fallbacks credited, the
headline."""

from __future__ import annotations

import re

import numpy as np
import pytest
from predictor_data import random_walk

from moetrace.backtest import backtest
from moetrace.report.document import against_best, bottom_line_rows, credited, note_lines
from moetrace.report.results import summarize
from moetrace.report.verdict import bottom_line, headline, notes, recommendation


class Truth:
    """Forecasts the actual future shares plus ``noise``; says it fell back at the first
    ``fallbacks`` fits (as a predictor with too little history would)."""

    def __init__(self, loads, name, noise=0.0, fallbacks=0, seed=0):
        self.loads, self.name, self.noise, self.left = loads, name, noise, fallbacks
        self.rng = np.random.default_rng(seed)
        self.fallback = None

    def fit(self, history):
        self.origin = int(history.steps[-1])
        self.fallback = "too little history: its baseline" if self.left > 0 else None
        self.left -= 1
        return self

    def forecast(self, horizon):
        i = int(np.searchsorted(self.loads.steps, self.origin)) + 1
        f = self.loads.shares[:, i:i + horizon].copy()
        if f.shape[1] < horizon:  # past the trace's end: hold the last row
            f = np.concatenate([f, np.repeat(f[:, -1:], horizon - f.shape[1], axis=1)], 1)
        f = np.abs(f + self.rng.normal(0, self.noise, f.shape))
        return f / f.sum(axis=-1, keepdims=True)

    def uncertainty(self, horizon):
        return None


def _bottom(result):
    rows = summarize(result)
    bottom = bottom_line(result, rows)
    return rows, bottom


@pytest.fixture(scope="module")
def loads():
    return random_walk(n_layers=3, n_steps=1500, seed=7)


def test_a_predictor_that_fell_back_at_most_origins_cannot_be_best(loads):
    lucky = Truth(loads, "lucky", noise=0.0, fallbacks=7)  # best of all, but 7 of 10 not its own
    result = backtest(loads, [lucky, Truth(loads, "good", noise=0.002, seed=1), "naive"],
                      [50], n_origins=10, min_history=300)
    rows, [cell] = _bottom(result)
    assert cell["ranked"] and cell["fell_back"]["lucky"] == 7
    assert cell["best"] == "good" and cell["cannot_be_best"] == ["lucky"]
    assert cell["verdicts"] == {"lucky": "better", "naive": "worse"}  # credited, not hidden
    assert credited("lucky", cell) == "lucky (fell back 7/10)"
    assert "better: lucky (fell back 7/10)" in against_best(cell)
    rate = next(r.fallback_rate for r in rows if r.predictor == "lucky" and r.layer is None)
    assert rate == pytest.approx(0.7)
    # at half the origins or fewer it may be best
    fewer = backtest(loads, [Truth(loads, "lucky", fallbacks=5), "naive"], [50], n_origins=10,
                     min_history=300)
    assert _bottom(fewer)[1][0]["best"] == "lucky"


def test_too_few_origins_name_no_best_and_the_headline_says_why(loads):
    result = backtest(loads, [Truth(loads, "good"), "naive"], [50], n_origins=4,
                      min_history=300)
    rows, [cell] = _bottom(result)
    assert not cell["ranked"] and cell["best"] is None and cell["verdicts"] == {}
    assert (cell["origins"], cell["pairs"]) == (4, 12)
    recommended = recommendation([cell], None)
    assert recommended["predictor"] is None
    text = headline(recommended, [cell], None)
    assert text.startswith("No predictor can be recommended for this run: no horizon and "
                           "state has enough origins to rank")
    assert "at most 4 origins and 12 (origin, layer) pairs; it takes 5 and 10" in text
    _, [table_row] = bottom_line_rows({"bottom_line": [cell]})
    assert table_row[:5] == ("50", "all", "4", "12", "—")


def test_the_recommendation_is_best_or_level_in_the_most_cells(loads):
    stable = np.zeros((3, 1500), dtype=bool)
    stable[:, 700:] = True
    result = backtest(loads, [Truth(loads, "good", noise=0.001), Truth(loads, "close",
                                                                        noise=0.0011, seed=3),
                              "naive"], [50, 100], stable=stable, n_origins=16,
                      min_history=300)
    rows, bottom = _bottom(result)
    ranked = [b for b in bottom if b["ranked"]]
    assert len(ranked) >= 4
    recommended = recommendation(bottom, None)
    assert recommended["predictor"] in ("good", "close")
    assert recommended["best_or_level"] == sum(
        1 for b in ranked if b["best"] == recommended["predictor"]
        or b["verdicts"].get(recommended["predictor"]) != "worse")
    assert recommended["ahead_of"]["naive"] == len(ranked)  # naive: clearly worse everywhere
    text = headline(recommended, bottom, None)
    assert text.startswith(f"Use {recommended['predictor']}: it is best or level with the "
                           f"best in {recommended['best_or_level']} of the {len(ranked)} cells")
    assert re.search(rf"clearly ahead of (\w+, )*(\w+ and )?naive in all {len(ranked)}", text)
    assert text.endswith(".") and text.count(". ") == 0


def test_each_fallback_reason_is_one_note_with_its_count(loads):
    class Varying(Truth):
        def fit(self, history):
            super().fit(history)
            if self.fallback:  # the reason names the origin's history, as arima's does
                self.fallback = f"too little history: got {history.n_steps:,} steps"
            return self

    result = backtest(loads, [Varying(loads, "v", fallbacks=6), "naive"], [50],
                      n_origins=10, min_history=300)
    doc = {"notes": notes(result, summarize(result)), "parameters": {}}
    lines = [line for line in note_lines(doc) if line.startswith("v ")]
    assert len(lines) == 1 and lines[0].startswith("v fell back at 6 of 10 origins: ")


def test_among_predictors_level_everywhere_the_one_with_clear_wins_is_recommended():
    def cell(best, verdicts):
        return {"ranked": True, "best": best, "verdicts": verdicts, "cannot_be_best": [],
                "fell_back": dict.fromkeys(["a", "b", "naive"], 0), "reason": None,
                "origins": 12, "pairs": 24}

    level = "no clear difference"
    bottom = [cell("a", {"b": level, "naive": level}),  # a lowest in two cells, beats nobody
              cell("a", {"b": level, "naive": level}),
              cell("b", {"a": level, "naive": "worse"})]  # b clearly ahead of naive once
    recommended = recommendation(bottom, None)
    assert recommended["predictor"] == "b" and recommended["best_or_level"] == 3
    assert recommended["ahead_of"] == {"a": 0, "naive": 1}
    assert headline(recommended, bottom, None) == (
        "Use b: it is best or level with the best in 3 of the 3 cells with enough origins to "
        "rank, clearly ahead of naive in 1 but not of a.")
