"""auto against the simple peers a user would try first, and whether its intervals hold.

`python -m benchmarks peers` backtests, on every trace of the suite (the committed samples, a
simulated 350M trace of 12 layers x 6,000 steps and, with ``MOETRACE_SMARTMOE`` set to
SmartMoE's ``moe_trace/`` folder or to a trace imported from it, SmartMoE's real trace), the
report's default predictor ``auto`` and these peers, on the report's own origins, horizons
and hindsight states (``moetrace.pipeline.backtest`` with the defaults, placement left out):

* ``last``: the last sample, held (naive);
* ``mean(w)``: the mean of the last w samples, every w from 2 to 50 (computed all at once,
  :func:`trailing_means`; checked against the backtest engine for two of them);
* ``ewma(a)``: the exponentially weighted mean of the samples, alpha 0.2 and 0.3;
* ``ets``: damped-trend exponential smoothing, statsforecast's ``AutoETS(model="AAN",
  damped=True)``, fitted per (layer, expert) on 20-step bucket means of the last
  :data:`ETS_BUCKETS` buckets (buckets keep it to minutes; a step's sampling noise is no
  signal for it). It needs the ``statsforecast`` package, which moetrace never imports; without
  it the peer is left out with a line saying so.

Per trace, horizon and state it prints auto's and each peer's error rate over the same
(origin, layer) pairs, with the report's centre (the mean over origins of the layer mean,
moetrace.evidence.estimate), and the paired verdict of auto against the peer, the very
comparison the report's bottom line makes (moetrace.evidence.compare): the mean paired
difference (auto - peer) with its 95% interval over origins (the layers of one origin are one
observation; origins whose horizons overlap are not independent); "better" or "worse" only
when the interval excludes zero, "too few origins to rank" below the report's minimum
evidence (5 origins, 10 pairs). The 49 trailing means are summarised (the best of them, and
every one auto is worse than). Then auto's 80% intervals: coverage over every forecast, its
spread over layers and experts, expected against realised error (moetrace.calibrate), and
the one-line calibration verdict a report ends with.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

WINDOWS = tuple(range(2, 51))
SHOWN = (2, 5, 10, 20, 50)  # trailing means printed whatever their verdict
ALPHAS = (0.2, 0.3)
ETS_BUCKET = 20  # training steps per bucket of the ETS peer
ETS_BUCKETS = 250  # buckets of history it is fitted on
STATES = ("stable", "transient")
SAMPLES = ("gpt3-350m-sim.parquet", "gpt3-125m-sim.parquet", "demo-real.parquet",
           "demo-sampled")


def peers() -> list:
    """The peer predictors run through the backtest engine (ets only where installed)."""
    from moetrace.predictors.template import BucketPredictor

    class Held(BucketPredictor):
        """A level per (layer, expert), held over the horizon; one sample per bucket."""

        name, default_bucket = "last", 1

        def _fit(self, buckets, history):
            self._level = buckets[:, -1]

        def _forecast_buckets(self, k):
            return np.repeat(self._level[:, None], k, axis=1)

    class Mean(Held):
        def __init__(self, w):
            super().__init__()
            self.w, self.name = w, f"mean({w})"

        def _fit(self, buckets, history):
            self._level = buckets[:, -self.w:].mean(axis=1)

    class Ewma(Held):
        def __init__(self, alpha):
            super().__init__()
            self.alpha, self.name = alpha, f"ewma({alpha:g})"

        def _fit(self, buckets, history):
            n = buckets.shape[1]
            w = (1 - self.alpha) ** np.arange(n)[::-1]  # oldest first; the first sample
            w[1:] *= self.alpha  # starts the recursion with its full weight
            self._level = np.einsum("n,lne->le", w, buckets)

    class Ets(Held):
        name, default_bucket = "ets", ETS_BUCKET

        def _fit(self, buckets, history):
            self._series = buckets[:, -ETS_BUCKETS:]

        def _forecast_buckets(self, k):
            from statsforecast.models import AutoETS

            model = AutoETS(model="AAN", damped=True)
            n_layers, n, n_experts = self._series.shape
            out = np.empty((n_layers, k, n_experts))
            for layer in range(n_layers):  # one fit per series: statsforecast's own loop
                for e in range(n_experts):
                    y = self._series[layer, :, e]
                    if n < 10 or np.ptp(y) == 0:  # too short or flat: nothing to fit
                        out[layer, :, e] = y[-1]
                    else:
                        out[layer, :, e] = model.forecast(y=y, h=k)["mean"]
            return out

    made = [Held(), Mean(SHOWN[0]), Mean(SHOWN[-1])] + [Ewma(a) for a in ALPHAS]
    try:
        import statsforecast  # noqa: F401
    except ImportError:
        print("  (ets left out: statsforecast is not installed; pip install 'moetrace[bench]')")
    else:
        made.append(Ets())
    return made


def trailing_means(loads, origins: np.ndarray, horizons, windows) -> dict:
    """{(w, h): (N, L) error rate} of the mean of the last w samples at each origin, held
    over each horizon: the engine's scoring (metrics.error_rate over the horizon's recorded
    steps) for every window at once."""
    from moetrace.metrics import error_rate

    shares = loads.shares
    cum = np.concatenate([np.zeros_like(shares[:, :1]), np.cumsum(shares, axis=1)], axis=1)
    out = {(w, h): np.full((len(origins), loads.n_layers), np.nan) for w in windows
           for h in horizons}
    last = int(loads.steps[-1])
    for i, t in enumerate(origins):
        seen = int(np.searchsorted(loads.steps, t, side="right"))
        for h in horizons:
            if t + h > last:
                continue
            rows = loads.rows(int(t), int(t) + h)
            actual = shares[:, rows]
            for w in windows:
                m = min(w, seen)
                level = (cum[:, seen] - cum[:, seen - m]) / m
                out[(w, h)][i] = error_rate(level[:, None, :], actual)
    return out


def paired(auto: np.ndarray, peer: np.ndarray, mask: np.ndarray, origins: np.ndarray,
           horizon: int) -> dict:
    """auto against a peer on their common pairs of ``mask``: the report's own paired
    comparison (moetrace.evidence.compare, with the overlap of the origins' horizons), its
    verdict about auto, "too few origins to rank" below the report's minimum evidence."""
    from moetrace.evidence import TOO_FEW, compare

    c = compare(auto, peer, mask, steps=origins, horizon=horizon)
    return {"origins": c.origins, "pairs": c.pairs, "mean": c.mean_difference,
            "lo": c.lower, "hi": c.upper, "verdict": c.verdict if c.enough else TOO_FEW}


def coverage_line(scores, mask: np.ndarray) -> str:
    """auto's interval coverage over every forecast in ``mask`` (moetrace.calibrate)."""
    from moetrace.calibrate import coverage_of

    c = coverage_of(scores, mask)
    if c is None:
        return "no intervals"
    pct = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    line = (f"80% intervals held {pct(c.pooled)} of {c.forecasts} forecasts' expert means "
            f"({c.stated} with an interval); per layer {100 * c.layers[0]:.0f}-"
            f"{100 * c.layers[1]:.0f}%")
    if c.experts is not None:
        line += f", per expert p10-p90 {100 * c.experts[0]:.0f}-{100 * c.experts[1]:.0f}%"
    if c.expected_error is not None:
        rho = "n/a" if c.rank_correlation is None else f"{c.rank_correlation:.2f}"
        ratio = "n/a" if c.error_ratio is None else f"{c.error_ratio:.2f}"
        line += (f"; expected error {pct(c.expected_error)} against {pct(c.realised_error)} "
                 f"realised (ratio {ratio}, rank correlation {rho})")
    return line


def run(label: str, path: str) -> dict:
    """Print the peers table of one trace; returns per cell the peers auto is worse than
    and auto's stable coverage."""
    from moetrace.backtest import backtest
    from moetrace.calibrate import calibration_verdict, state_coverage
    from moetrace.evidence import estimate
    from moetrace.pipeline import backtest as report_backtest

    t0 = time.perf_counter()
    data = report_backtest(path, predictors=["auto"], placement=None)
    result, loads = data.result, data.trace.loads()
    seconds = {"auto (with the state analysis)": time.perf_counter() - t0}
    t0 = time.perf_counter()
    engine = backtest(loads, peers(), result.horizons,
                      stable=data.analysis.labels("hindsight"), origins=result.origins,
                      min_history=data.span.min_history, lookahead_radius=None)
    seconds["peers through the engine"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    means = trailing_means(loads, result.origins, result.horizons, WINDOWS)
    seconds["trailing means 2-50"] = time.perf_counter() - t0
    for w in (SHOWN[0], SHOWN[-1]):  # the vectorised family scores as the engine does
        for h in result.horizons:
            np.testing.assert_allclose(means[(w, h)],
                                       engine.scores[(f"mean({w})", h)].metrics["error_rate"],
                                       rtol=1e-9, atol=1e-12)
    errors = {name: {h: engine.scores[(name, h)].metrics["error_rate"]
                     for h in result.horizons}
              for name in engine.predictors if not name.startswith("mean(")}
    errors.update({f"mean({w})": {h: means[(w, h)] for h in result.horizons}
                   for w in WINDOWS})
    print(f"\n## peers: {label} ({data.trace.n_layers} layers x {data.trace.n_experts} experts, "
          f"{len(result.origins)} origins; seconds: "
          + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ")")
    summary = {}
    for h in result.horizons:
        auto = result.scores[("auto", h)]
        a = auto.metrics["error_rate"]
        for state in STATES:
            mask = (result.stable if state == "stable" else ~result.stable) & np.isfinite(a)
            if not mask.any():
                continue
            rows = {name: (estimate(e[h], mask).centre,
                           paired(a, e[h], mask, result.origins, h))
                    for name, e in errors.items()}
            worse = [name for name, (_, v) in rows.items() if v["verdict"] == "worse"]
            best_mean = min((n for n in rows if n.startswith("mean(")), key=lambda n: rows[n][0])
            any_v = next(iter(rows.values()))[1]
            print(f"\n  {h:,} steps, {state}: {any_v['origins']} origins, {any_v['pairs']} pairs;"
                  f" auto {100 * estimate(a, mask).centre:.3f}%; auto worse than: "
                  f"{', '.join(worse) or 'none'}")
            shown = [n for n in rows if not n.startswith("mean(")]
            shown += [f"mean({w})" for w in SHOWN] + [best_mean]
            for name in dict.fromkeys(shown + worse):
                error, v = rows[name]
                tag = "  (best trailing mean)" if name == best_mean else ""
                print(f"    {name:<10} {100 * error:7.3f}%   auto - peer {100 * v['mean']:+7.3f} "
                      f"[{100 * v['lo']:+7.3f}, {100 * v['hi']:+7.3f}]  {v['verdict']}{tag}")
            print(f"    auto: {coverage_line(auto, mask)}")
            c = state_coverage(result, "auto", h, state)
            better = sum(v["verdict"] == "better" for _, v in rows.values())
            summary[(h, state)] = (worse, None if c is None else c.pooled, any_v["origins"],
                                   f"{better}/{len(rows)}")
    print(f"\n  calibration: {calibration_verdict(result)}")
    return summary


def suite(tmp: str) -> list[tuple[str, str]]:
    """(label, path) of every trace the benchmark runs on."""
    from moetrace.simulate import simulate_trace

    here = Path(__file__).resolve().parent.parent / "sample_traces"
    out = [(name, str(here / name)) for name in SAMPLES]
    sim = os.path.join(tmp, "gpt3-350m-6000.parquet")
    simulate_trace(sim, preset="gpt3-350m", steps=6000, seed=0)
    out.append(("gpt3-350m 12 layers x 6,000 steps", sim))
    src = os.environ.get("MOETRACE_SMARTMOE")
    if src and Path(src).is_dir() and any(Path(src).glob("table_iter*")):
        from moetrace.record.importers import import_trace

        path = os.path.join(tmp, "smartmoe.parquet")
        import_trace("smartmoe", src, path)
        out.append(("SmartMoE (real)", path))
    elif src and Path(src).exists():
        out.append(("SmartMoE (real)", src))
    else:
        print("\n## peers: SmartMoE left out (set MOETRACE_SMARTMOE to its moe_trace/ folder "
              "or to a trace imported from it; the data are GPL-3.0 and not shipped)")
    return out


def main(runs: int = 1, only: list[str] | None = None) -> None:
    """``runs`` is ignored: the figures are errors and coverages, not timings (one run).
    ``only``: run the traces whose label contains one of these."""
    cells = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in suite(tmp):
            if not only or any(o in label for o in only):
                cells[label] = run(label, path)
    print("\n## peers: summary (a verdict needs 5 origins and 10 pairs; better: the peers auto "
          "is clearly better than; coverage: every forecast counted)")
    for label, per in cells.items():
        for (h, state), (worse, cov, origins, better) in per.items():
            cov = "" if cov is None else f"coverage {100 * cov:5.1f}%"
            print(f"  {label[:34]:<34} {h:>6,} {state:<9} {origins:>2} origins  better "
                  f"{better:>5}  worse than: {', '.join(worse) or 'none':<20} {cov}")


if __name__ == "__main__":
    main(only=sys.argv[1:])
