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

import functools
import os
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
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


@dataclass
class Cell:
    """One (horizon, state) cell of a trace: auto's error (the report's centre) and, per peer,
    its error and auto's paired verdict against it (:func:`paired`), and auto's coverage."""

    horizon: int
    state: str
    auto: float
    peers: dict  # name -> (error, paired(...))
    coverage: object  # moetrace.calibrate.Coverage, or None
    mask: np.ndarray  # (origins, layers) the cell's scored pairs

    @property
    def evidence(self) -> dict:
        """Origins and pairs of the cell (every peer is scored on the same ones)."""
        return next(iter(self.peers.values()))[1]

    @property
    def ranked(self) -> bool:
        from moetrace.evidence import TOO_FEW

        return self.evidence["verdict"] != TOO_FEW

    @property
    def worse(self) -> list[str]:
        return [name for name, (_, v) in self.peers.items() if v["verdict"] == "worse"]

    @property
    def best_mean(self) -> str:
        """The trailing mean of 2-50 with the lowest error in the cell."""
        return min((n for n in self.peers if n.startswith("mean(")),
                   key=lambda n: self.peers[n][0])


def cells(path: str) -> tuple[list[Cell], dict, object, object]:
    """Every (horizon, state) cell of the trace at ``path`` with enough forecasts to score;
    also the seconds each stage took, the backtest result and the trace."""
    from moetrace.backtest import backtest
    from moetrace.calibrate import state_coverage
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
    out = []
    for h in result.horizons:
        a = result.scores[("auto", h)].metrics["error_rate"]
        for state in STATES:
            mask = (result.stable if state == "stable" else ~result.stable) & np.isfinite(a)
            if not mask.any():
                continue
            out.append(Cell(h, state, float(estimate(a, mask).centre),
                            {name: (float(estimate(e[h], mask).centre),
                                    paired(a, e[h], mask, result.origins, h))
                             for name, e in errors.items()},
                            state_coverage(result, "auto", h, state), mask))
    return out, seconds, result, data.trace


def run(label: str, path: str) -> list[Cell]:
    """Print the peers table of one trace; returns its cells."""
    from moetrace.calibrate import calibration_verdict

    found, seconds, result, trace = cells(path)
    print(f"\n## peers: {label} ({trace.n_layers} layers x {trace.n_experts} experts, "
          f"{len(result.origins)} origins; seconds: "
          + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + ")")
    for cell in found:
        v = cell.evidence
        print(f"\n  {cell.horizon:,} steps, {cell.state}: {v['origins']} origins, "
              f"{v['pairs']} pairs; auto {100 * cell.auto:.3f}%; auto worse than: "
              f"{', '.join(cell.worse) or 'none'}")
        shown = [n for n in cell.peers if not n.startswith("mean(")]
        shown += [f"mean({w})" for w in SHOWN] + [cell.best_mean]
        for name in dict.fromkeys(shown + cell.worse):
            error, v = cell.peers[name]
            tag = "  (best trailing mean)" if name == cell.best_mean else ""
            print(f"    {name:<10} {100 * error:7.3f}%   auto - peer {100 * v['mean']:+7.3f} "
                  f"[{100 * v['lo']:+7.3f}, {100 * v['hi']:+7.3f}]  {v['verdict']}{tag}")
        print(f"    auto: {coverage_line(result.scores[('auto', cell.horizon)], cell.mask)}")
    print(f"\n  calibration: {calibration_verdict(result)}")
    return found


#: the docs table's name of each trace of the suite, in the table's order
DOC_LABELS = {"SmartMoE (real)": "SmartMoE (real)",
              "gpt3-350m 12 layers x 6,000 steps": "350M, 12 x 6,000",
              "gpt3-350m-sim.parquet": "350M sample", "gpt3-125m-sim.parquet": "125M sample",
              "demo-real.parquet": "demo-real", "demo-sampled": "demo-sampled"}
#: auto's paired verdict against a peer, in one letter (b: auto better, W: auto worse)
CODES = {"better": "b", "no clear difference": "=", "worse": "W"}
TABLE_HEAD = ("| trace | horizon | state | origins / pairs | auto | last | ewma(0.2) | ewma(0.3) "
              "| ets | best trailing mean | auto worse than | coverage |")


def table(found: dict[str, list[Cell]]) -> str:
    """The docs' table of the suite's cells (``found``: suite label -> cells), the cells too
    few origins to judge, and every peer auto is clearly worse than, with its figures."""
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    code = lambda v: CODES.get(v["verdict"], "?")  # noqa: E731
    order = [label for label in DOC_LABELS if label in found]
    rows, few, misses = [], [], []
    for label in order:
        name = DOC_LABELS[label]
        for c in found[label]:
            where = f"{name}, {c.horizon:,} steps, {c.state}"
            if not c.ranked:
                few.append(f"{where} ({c.evidence['origins']} origin"
                           f"{'s' if c.evidence['origins'] != 1 else ''})")
                continue
            cols = [f"{pct(c.peers[p][0])} {code(c.peers[p][1])}"
                    for p in ("last", "ewma(0.2)", "ewma(0.3)", "ets")]
            best = c.best_mean
            cov = "n/a" if c.coverage is None else f"{100 * c.coverage.pooled:.1f}%"
            rows.append(f"| {name} | {c.horizon:,} | {c.state} | {c.evidence['origins']} / "
                        f"{c.evidence['pairs']} | {pct(c.auto)} | {' | '.join(cols)} | "
                        f"{best} {pct(c.peers[best][0])} {code(c.peers[best][1])} | "
                        f"{', '.join(c.worse) or 'none'} | {cov} |")
            for peer in c.worse:
                error, v = c.peers[peer]
                misses.append(f"{where}: auto {pct(c.auto)} against {peer} {pct(error)}; "
                              f"difference {100 * v['mean']:+.3f} points, 95% interval "
                              f"{100 * v['lo']:+.3f} to {100 * v['hi']:+.3f}")
    fill = functools.partial(textwrap.fill, width=95, break_on_hyphens=False)
    text = TABLE_HEAD + "\n|" + " --- |" * (TABLE_HEAD.count("|") - 1) + "\n"
    text += "\n".join(rows) + "\n"
    if few:
        text += "\n" + fill("Left out, too few origins to judge: " + "; ".join(few) + ".") + "\n"
    text += "\nPeers auto is clearly worse than:" + (" none.\n" if not misses else "\n\n" + "".join(
        fill(m, initial_indent="- ", subsequent_indent="  ") + "\n" for m in misses))
    return text + "\n" + intervals_table(found)


INTERVALS_HEAD = ("| trace | horizon | state | forecasts (with an interval) | coverage | per layer "
                  "| per expert, p10-p90 | expected / realised error | rank correlation |")


def intervals_table(found: dict[str, list[Cell]]) -> str:
    """auto's 80% intervals in every judged cell (:func:`table`'s): coverage over every
    forecast, its spread over layers and experts, and the expected error against the
    realised one (moetrace.calibrate.coverage_of)."""
    def num(x, form):
        return "n/a" if x is None else form.format(x)

    def spread(p):
        return "n/a" if p is None else f"{100 * p[0]:.0f}-{100 * p[1]:.0f}%"

    rows = []
    for label in (label for label in DOC_LABELS if label in found):
        for c in found[label]:
            v = c.coverage
            if not c.ranked or v is None:
                continue
            rows.append(f"| {DOC_LABELS[label]} | {c.horizon:,} | {c.state} | {v.forecasts:,} "
                        f"({v.stated:,}) | {100 * v.pooled:.1f}% | {spread(v.layers)} | "
                        f"{spread(v.experts)} | {num(v.error_ratio, '{:.2f}x')} | "
                        f"{num(v.rank_correlation, '{:.2f}')} |")
    return (INTERVALS_HEAD + "\n|" + " --- |" * (INTERVALS_HEAD.count("|") - 1) + "\n" +
            "\n".join(rows) + "\n")


def suite(tmp: str, smartmoe: str | None = None) -> list[tuple[str, str]]:
    """(label, path) of every trace the benchmark runs on (``smartmoe``: SmartMoE's trace
    or ``moe_trace/`` folder; default ``MOETRACE_SMARTMOE``)."""
    from moetrace.simulate import simulate_trace

    here = Path(__file__).resolve().parent.parent / "sample_traces"
    out = [(name, str(here / name)) for name in SAMPLES]
    sim = os.path.join(tmp, "gpt3-350m-6000.parquet")
    simulate_trace(sim, preset="gpt3-350m", steps=6000, seed=0)
    out.append(("gpt3-350m 12 layers x 6,000 steps", sim))
    src = smartmoe or os.environ.get("MOETRACE_SMARTMOE")
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
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path in suite(tmp):
            if not only or any(o in label for o in only):
                found[label] = run(label, path)
    print("\n## peers: summary (a verdict needs 5 origins and 10 pairs; better: the peers auto "
          "is clearly better than; coverage: every forecast counted)")
    for label, per in found.items():
        for c in per:
            better = sum(v["verdict"] == "better" for _, v in c.peers.values())
            cov = "" if c.coverage is None else f"coverage {100 * c.coverage.pooled:5.1f}%"
            print(f"  {label[:34]:<34} {c.horizon:>6,} {c.state:<9} "
                  f"{c.evidence['origins']:>2} origins  better {better:>2}/{len(c.peers)}  "
                  f"worse than: {', '.join(c.worse) or 'none':<20} {cov}")


if __name__ == "__main__":
    main(only=sys.argv[1:])
