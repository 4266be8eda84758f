"""Predictors on the 350M preset (12 x 128 = 1,536 series, 20,000 steps): ARIMA from a first
origin and from a further origin of a backtest, LSTM training. Targets: ARIMA first origin
< 30 s and each further origin a few seconds; LSTM training < 2 minutes (2 CPU cores)."""

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

_LSTM = """
p = make_predictor("lstm", PredictorOptions(seed=0))
with timed("lstm: first origin (train + forecast 2,000 and 1,000)"):
    p.fit(loads.upto(15_999)); p.forecast(2000); p.forecast(1000)
with timed("lstm: further origin (condition + forecast)"):
    p.fit(loads.upto(16_999)); p.forecast(2000); p.forecast(1000)
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


if __name__ == "__main__":
    main(runs=3)
