"""Predictors on the 350M preset (12 x 128 = 1,536 series, 20,000 steps): ARIMA from a first
origin and from a further origin of a backtest, LSTM training; and the LSTM's whole backtest
(the report's 12 origins, 1,000- and 2,000-step horizons) on the bundled 350M sample (2 x 128
experts, 6,000 steps) and on the preset cut to 6,000 steps (12 x 128). Targets: ARIMA first
origin < 30 s and each further origin a few seconds; LSTM training < 2 minutes (2 CPU
cores)."""

from __future__ import annotations

import os
import tempfile

from benchmarks.common import measure, print_figures

_SETUP = """
from moetrace.trace import read_trace
from moetrace.predictors import PredictorOptions, make_predictor
loads = read_trace({path!r}).loads()
"""

_ARIMA = """
p = make_predictor("arima", PredictorOptions(order={order}))
with timed("arima {label}: first origin (estimate + forecast 2,000 and 1,000)"):
    p.fit(loads.upto(15_999)); p.forecast(2000); p.forecast(1000)
with timed("arima {label}: further origin (re-filter + forecast)"):
    p.fit(loads.upto(16_999)); p.forecast(2000); p.forecast(1000)
"""

_LSTM_BACKTEST = """
from moetrace.backtest import backtest
from moetrace.trace import read_trace
for label, path in {paths!r}:
    loads = read_trace(path).loads()
    with timed(f"lstm: backtest, {{label}}"):
        backtest(loads, ["lstm"], [1000, 2000], n_origins=12, lookahead_radius=None)
"""

_LSTM = """
p = make_predictor("lstm", PredictorOptions(seed=0, horizons=(1000, 2000)))
with timed("lstm: first origin (train + forecast 2,000 and 1,000)"):
    p.fit(loads.upto(15_999)); p.forecast(2000); p.forecast(1000)
with timed("lstm: further origin (condition + forecast)"):
    p.fit(loads.upto(16_999)); p.forecast(2000); p.forecast(1000)
"""

_LSTM_BACKTEST = """
from moetrace.backtest import backtest
from moetrace.trace import read_trace
for label, path in {paths!r}:
    loads = read_trace(path).loads()
    with timed(f"lstm: backtest, {{label}}"):
        backtest(loads, ["lstm"], [1000, 2000], n_origins=12, lookahead_radius=None)
"""


def main(runs: int) -> None:
    from moetrace.simulate import simulate_trace

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gpt3-350m.parquet")
        simulate_trace(path, preset="gpt3-350m", steps=20_000, seed=0)
        setup = _SETUP.format(path=path)
        for label, order in (("(5,1,5)", (5, 1, 5)), ("auto order", None)):
            print_figures(f"predict: arima {label}, gpt3-350m x 20,000 steps, 1,536 series",
                          measure(setup + _ARIMA.format(order=order, label=label), runs), runs)
        print_figures("predict: lstm, gpt3-350m x 20,000 steps",
                      measure(setup + _LSTM, runs), runs)
        short = os.path.join(tmp, "gpt3-350m-6000.parquet")
        simulate_trace(short, preset="gpt3-350m", steps=6_000, seed=0)
        sample = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "sample_traces", "gpt3-350m-sim.parquet")
        paths = [("350M sample 2 x 128 x 6,000", sample), ("350M 12 x 128 x 6,000", short)]
        print_figures("predict: lstm backtests, 12 origins, horizons 1,000 and 2,000",
                      measure(_LSTM_BACKTEST.format(paths=paths), runs), runs)


def lstm_accuracy(paths: list[str]) -> None:
    """Per trace: at how many of the report's 12 origins the lstm ran (no fallback), and its
    error rate against naive, sw_avg and auto at 1,000 and 2,000 steps by state (hindsight
    states, as the report labels them), on the same (origin, layer) pairs, only where it ran:
    the mean over those pairs and the share of pairs where the lstm's error is lower."""
    import numpy as np

    from moetrace.backtest import backtest
    from moetrace.pipeline import analyze, open_trace

    others = ("naive", "sw_avg", "auto")
    for path in paths:
        trace = open_trace(path)
        result = backtest(trace.loads(), ["lstm", *others], [1000, 2000],
                          stable=analyze(trace).labels("hindsight"), n_origins=12,
                          lookahead_radius=None)
        ran = np.array([r is None for r in result.fallbacks["lstm"]])
        print(f"\n## {path}: lstm ran at {ran.sum()} of {len(ran)} origins")
        for reason in dict.fromkeys(r for r in result.fallbacks["lstm"] if r):
            print(f"  fell back: {reason}")
        for h in result.horizons:
            error = {name: result.scores[(name, h)].metrics["error_rate"]
                     for name in ("lstm", *others)}
            for state, labels in (("stable", result.stable), ("transient", ~result.stable)):
                pairs = ran[:, None] & labels & np.isfinite(error["lstm"])
                if not pairs.any():
                    continue
                mine = error["lstm"][pairs]
                print(f"  {h:>5,} {state:<9} {pairs.any(axis=1).sum():>2} origins "
                      f"{pairs.sum():>3} pairs  lstm {100 * mine.mean():6.2f}%  " + "  ".join(
                          f"{name} {100 * error[name][pairs].mean():6.2f}% "
                          f"(lstm lower {np.mean(mine < error[name][pairs]):4.0%})"
                          for name in others))


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["lstm-accuracy"]:
        lstm_accuracy(sys.argv[2:])
    else:
        main(runs=3)
