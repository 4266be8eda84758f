"""The results table: averages per layer and over layers, the state split, spread, noise floor."""

import numpy as np
import pytest

from moetrace.backtest import backtest
from moetrace.report.results import find, summarize
from moetrace.trace.shares import Loads


class Offset:
    """Forecasts the constant shares ``base`` plus a per-layer offset on the first two experts."""

    name = "offset"

    def __init__(self, base, offsets):
        self.base, self.offsets = np.asarray(base, float), np.asarray(offsets, float)

    def fit(self, history):
        return self

    def forecast(self, horizon):
        f = np.broadcast_to(self.base, (len(self.offsets), horizon, len(self.base))).copy()
        f[:, :, 0] += self.offsets[:, None]
        f[:, :, 1] -= self.offsets[:, None]
        return f

    fallback = None

    def uncertainty(self, horizon):
        return None


@pytest.fixture
def result():
    base = np.array([0.4, 0.3, 0.2, 0.1])
    counts = np.broadcast_to((base * 100).astype(np.int64), (2, 60, 4)).copy()
    loads = Loads(np.arange(60), counts, (0, 1))
    stable = np.zeros((2, 60), dtype=bool)
    stable[0, 25:] = True  # layer 0 stable from 25; layer 1 never
    # layer 0 errs 0.02 per step (offset 0.01 on two experts), layer 1 errs 0.06
    return backtest(loads, [Offset(base, [0.01, 0.03])], [5], stable=stable,
                    origins=[10, 20, 30, 40])


def test_layer_rows_and_average_over_layers(result):
    rows = summarize(result)
    assert find(rows, predictor="offset", horizon=5, layer=0).error_rate == pytest.approx(0.02)
    assert find(rows, predictor="offset", horizon=5, layer=1).error_rate == pytest.approx(0.06)
    avg = find(rows, predictor="offset", horizon=5)
    assert avg.error_rate == pytest.approx(0.04)
    assert (avg.origins, avg.pairs) == (4, 8)
    assert avg.noise_floor is None


def test_state_split_uses_each_layers_state_at_the_origin(result):
    floors = {"stable": np.array([0.005, np.nan]), "transient": np.array([0.009, 0.011]),
              "all": np.array([0.006, 0.011])}
    rows = summarize(result, floors)
    stable = find(rows, predictor="offset", horizon=5, state="stable")
    assert (stable.origins, stable.pairs) == (2, 2)  # only layer 0, at origins 30 and 40
    assert stable.error_rate == pytest.approx(0.02)
    assert stable.noise_floor == pytest.approx(0.005)
    transient = find(rows, predictor="offset", horizon=5, state="transient")
    assert (transient.origins, transient.pairs) == (4, 6)  # layer 1 always, layer 0 twice
    # the centre: per-origin means over layers first (origins 10, 20 average both layers,
    # 0.04; origins 30, 40 hold layer 1 only, 0.06), then their mean; not the pair mean 0.0467
    assert transient.error_rate == pytest.approx((0.04 + 0.04 + 0.06 + 0.06) / 4)
    assert transient.noise_floor == pytest.approx((0.010 + 0.010 + 0.011 + 0.011) / 4)
    # its 95% interval over the 4 origins (Student's t, 3 degrees of freedom; origins 10 steps
    # apart with a 5-step horizon do not overlap)
    from scipy import stats

    half = stats.t.ppf(0.975, 3) * np.std([0.04, 0.04, 0.06, 0.06], ddof=1) / 2
    assert transient.error_rate_lower == pytest.approx(0.05 - half)
    assert transient.error_rate_upper == pytest.approx(0.05 + half)
    assert transient.error_rate_lower <= transient.error_rate <= transient.error_rate_upper
    # the forecasts here are held constant: the bound (0, the shares never move) binds them
    assert transient.constant and transient.constant_bound == pytest.approx(0.0)
    assert transient.fallback_rate == 0.0
    assert find(rows, predictor="offset", horizon=5, state="stable", layer=1) is None
    assert find(rows, predictor="offset", horizon=5, state="all", layer=1).noise_floor == 0.011


def test_without_states_only_all_rows(result):
    from dataclasses import replace

    rows = summarize(replace(result, stable=None))
    assert {r.state for r in rows} == {"all"}
    assert len(rows) == 3  # average + 2 layers
