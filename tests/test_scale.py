"""Scale: work done a chunk of layers at a time, on a process pool or a real local Ray cluster,
gives the numbers a whole-trace run gives; counts in the narrowest type never overflow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from conftest import run_cli
from report_data import FAST, FAST_ARGS

from moetrace.errors import MissingExtraError, ParameterError
from moetrace.placement import Cluster
from moetrace import pipeline
from moetrace.pipeline import Execution
from moetrace.scale import Local, layer_chunks, make_executor
from moetrace.simulate import simulate_trace
from moetrace.states import to_json_dict
from moetrace.trace import read_trace
from moetrace.trace.schema import TraceMetadata
from moetrace.trace.write import write_trace

ONE_LAYER = 1  # a memory budget so small that every chunk holds one layer


def assert_same(a, b, path="", rel=1e-12):
    """Equal documents, floats to ``rel`` (the summation order of a per-layer mean can differ
    with the array's shape: measured differences are below 5e-16)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}", rel)
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", rel)
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-300), path
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = simulate_trace(tmp_path_factory.mktemp("scale") / "t.parquet", preset="gpt3-125m",
                          steps=1600, layers=3, experts=8, tokens_per_step=20_000, seed=5)
    return read_trace(path)


def test_chunks_fit_the_budget_and_cover_every_layer():
    from moetrace.scale.chunks import BYTES_PER_CELL

    two = 2 * 1000 * 16 * BYTES_PER_CELL["analyze"]
    assert layer_chunks(5, 1000, 16, "analyze", memory=two) == [[0, 1], [2, 3], [4]]
    assert layer_chunks(5, 1000, 16, "analyze", memory=1) == [[0], [1], [2], [3], [4]]
    assert layer_chunks(5, 10, 16, "backtest") == [[0, 1, 2, 3, 4]]


@pytest.mark.parametrize("executor", [Local(1), Local(2)], ids=["serial", "pool"])
def test_chunked_analysis_equals_the_whole(trace, executor):
    whole = pipeline.analyze(trace, top_k=1, run=Execution(Local(1)))
    parts = pipeline.analyze(trace, top_k=1, run=Execution(executor, ONE_LAYER))
    assert to_json_dict(parts) == to_json_dict(whole)
    assert np.array_equal(parts.stable, whole.stable)
    assert np.array_equal(parts.online_stable, whole.online_stable)
    for name, array in whole.step_stats.items():
        assert np.array_equal(parts.step_stats[name], array, equal_nan=True), name


def test_chunked_backtest_equals_the_whole(trace):
    predictors = ["naive", "sw_avg", "drift", "auto", "arima"]
    whole = pipeline.backtest(trace, predictors=predictors, horizons=[100, 200], n_origins=4,
                              min_history=300, placement=None, run=Execution(Local(1))).result
    parts = pipeline.backtest(trace, predictors=predictors, horizons=[100, 200], n_origins=4,
                              min_history=300, placement=None,
                              run=Execution(Local(2), ONE_LAYER)).result
    assert np.array_equal(parts.origins, whole.origins)
    for key, scores in whole.scores.items():
        for metric, values in scores.metrics.items():
            assert np.allclose(parts.scores[key].metrics[metric], values, rtol=0, atol=1e-12,
                               equal_nan=True), (key, metric)
    for h, values in whole.lookahead.items():
        assert np.array_equal(parts.lookahead[h], values, equal_nan=True)
    assert parts.constant_bound.keys() == whole.constant_bound.keys()
    for h, values in whole.constant_bound.items():
        assert np.array_equal(parts.constant_bound[h], values, equal_nan=True)
    assert parts.layers == whole.layers


def test_chunked_replay_and_plan_equal_the_whole(trace):
    cluster = Cluster(gpus=4, redundant=4)
    names = ["static", "window", "forecast:sw_avg", "oracle"]
    settings = {"load_window": 200, "replan_interval": 200, "predictor": "naive"}
    whole = pipeline.replay(trace, cluster, names, run=Execution(Local(1)), **settings)
    parts = pipeline.replay(trace, cluster, names, run=Execution(Local(2), ONE_LAYER),
                            **settings)
    assert parts.rows() == whole.rows()
    one = pipeline.plan(trace, cluster, estimate="window", load_window=200,
                        run=Execution(Local(1)))
    many = pipeline.plan(trace, cluster, estimate="window", load_window=200,
                         run=Execution(Local(2), ONE_LAYER))
    assert many.document("x") == one.document("x")


def test_chunked_forecast_equals_the_whole(trace):
    whole = pipeline.forecast(trace, ["sw_avg", "auto"], 200, run=Execution(Local(1)))
    parts = pipeline.forecast(trace, ["sw_avg", "auto"], 200,
                              run=Execution(Local(2), ONE_LAYER))
    assert parts.frame().equals(whole.frame())


def test_report_json_is_the_same_chunked_or_not(trace, tmp_path, monkeypatch):
    from moetrace.pipeline import build_report

    def doc(out, executor):
        report = build_report(trace.path, tmp_path / out, predictors=["naive", "auto"],
                              executor=executor, **FAST)
        d = report.document
        for volatile in ("created", "timings"):
            d.pop(volatile)
        d["placement"].pop("seconds")
        return json.loads(json.dumps(d))

    whole = doc("whole", Local(1))
    monkeypatch.setenv("MOETRACE_CHUNK_MEMORY", "1")
    assert_same(doc("chunked", Local(2)), whole)


@pytest.mark.slow
def test_ray_backend_on_a_real_local_cluster_gives_the_same_report(trace, tmp_path):
    pytest.importorskip("ray")
    from moetrace.pipeline import build_report

    def doc(out, executor):
        d = build_report(trace.path, tmp_path / out, predictors=["naive", "sw_avg"],
                         executor=executor, **FAST).document
        for volatile in ("created", "timings"):
            d.pop(volatile)
        d["placement"].pop("seconds")
        return json.loads(json.dumps(d))

    local = doc("local", Local(1))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MOETRACE_CHUNK_MEMORY", "1")  # three chunks: three Ray tasks per step
        ray_doc = doc("ray", make_executor("ray", workers=2))
    assert_same(ray_doc, local)


def test_backend_options_through_the_entry_point(trace, tmp_path):
    def moetrace(*args):
        return subprocess.run([sys.executable, "-m", "moetrace", *args], capture_output=True,
                              text=True)

    proc = moetrace("analyze", trace.path, "--workers", "0")
    assert proc.returncode == 2 and "--workers must be at least 1" in proc.stderr
    proc = moetrace("analyze", trace.path, "--backend", "spark")
    assert proc.returncode == 2 and "--backend takes local or ray" in proc.stderr
    proc = moetrace("analyze", trace.path, "--ray-address", "ray://x:1")
    assert proc.returncode == 2 and "--ray-address applies to --backend ray" in proc.stderr
    out = subprocess.run([sys.executable, "-m", "moetrace", "analyze", trace.path, "--json",
                          "--workers", "2"], capture_output=True, text=True,
                         env={**__import__("os").environ, "MOETRACE_CHUNK_MEMORY": "1"})
    serial = moetrace("analyze", trace.path, "--json", "--workers", "1")
    assert out.returncode == 0 and json.loads(out.stdout) == json.loads(serial.stdout)


def test_ray_without_the_extra_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"pip install 'moetrace\[ray\]'"):
        make_executor("ray")
    with pytest.raises(ParameterError, match="MOETRACE_CHUNK_MEMORY"):
        monkeypatch.setenv("MOETRACE_CHUNK_MEMORY", "lots")
        layer_chunks(2, 10, 4, "analyze")


@pytest.mark.parametrize("largest, dtype", [(2**31 - 1, np.int32), (2**31, np.int64)])
def test_counts_take_the_narrowest_type_that_holds_them(tmp_path, largest, dtype):
    """One expert takes a step's whole total: at 2^31 - 1 int32 holds it, at 2^31 it must not
    be int32 (it would wrap negative); the analysis is the same either way."""
    steps, experts = 120, 4
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 1000, size=(steps, experts))
    counts[7] = [largest - 3, 1, 1, 1]
    rows = pl.DataFrame({"step": np.repeat(np.arange(steps), experts),
                         "layer": np.zeros(steps * experts, dtype=np.int32),
                         "expert": np.tile(np.arange(experts, dtype=np.int32), steps),
                         "tokens": counts.reshape(-1).astype(np.int64)})
    path = tmp_path / "big.parquet"
    write_trace(rows, path, TraceMetadata(n_layers=1, n_experts=experts, top_k=1))
    trace = read_trace(path)
    loads = trace.loads()
    assert loads.counts.dtype == dtype
    assert loads.counts[0, 7].tolist() == [largest - 3, 1, 1, 1]
    assert loads.totals[0, 7] == largest
    assert np.allclose(loads.shares.sum(axis=2), 1.0)


def test_convert_round_trips_layer_major_through_the_entry_point(tmp_path):
    from moetrace.record.importers import import_trace

    src = tmp_path / "ranks.csv"  # two ranks, out of order: converted they are summed
    src.write_text("step,layer,expert,tokens,rank\n"
                   "1,1,0,2,1\n0,0,0,3,0\n0,0,1,1,0\n0,1,0,4,0\n0,1,1,0,0\n0,0,0,2,1\n"
                   "1,0,0,1,0\n1,0,1,5,0\n1,1,0,1,0\n1,1,1,1,0\n0,0,1,1,1\n")
    original = import_trace("csv", src, tmp_path / "orig.parquet")
    out = tmp_path / "lm.parquet"
    proc = subprocess.run([sys.executable, "-m", "moetrace", "convert", str(original), "-o",
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    a, b = read_trace(original), read_trace(out)
    assert np.array_equal(a.loads().counts, b.loads().counts)
    assert b.metadata.extra["layout"] == "layer-major"
    assert b.metadata.extra["source_format"] == "csv"  # the rest of the metadata is kept
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(out).metadata
    layers = [meta.row_group(i).column(1).statistics for i in range(meta.num_row_groups)]
    assert all(s.min == s.max for s in layers)  # one layer per row group
    again = subprocess.run([sys.executable, "-m", "moetrace", "convert", str(original), "-o",
                            str(out)], capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr
    same = subprocess.run([sys.executable, "-m", "moetrace", "convert", str(out), "-o",
                           str(out), "--force"], capture_output=True, text=True)
    assert same.returncode == 2 and "input" in same.stderr


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def test_workers_end_with_the_command_even_when_it_is_killed():
    """A scheduler's SIGKILL ends the command; its pool workers must not live on holding
    their chunk's memory."""
    import signal
    import time

    import psutil

    script = ("import time\nfrom moetrace.scale import Local\n"
              "Local(2).map(time.sleep, [(60,), (60,)])\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    workers = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both workers started
            workers = [p for p in _children(proc.pid) if "spawn_main" in " ".join(p.cmdline())]
            if len(workers) == 2:
                break
            time.sleep(0.2)
        assert len(workers) == 2, "the pool did not start"
        time.sleep(5.0)  # set up and sleeping in their task
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"workers outlived the killed command: {[p.pid for p in alive]}"
    finally:
        for p in workers:
            if p.is_running():
                p.kill()
        proc.kill()


def _touch_after(directory: str, index: int) -> None:
    """A task of the test below: the first fails at once, the others take a while and leave
    a file each."""
    import time
    from pathlib import Path

    if index == 0:
        raise ZeroDivisionError("task 0")
    time.sleep(0.5)
    (Path(directory) / f"{index}").touch()


def test_a_failing_task_raises_its_error_and_tasks_not_started_never_run(tmp_path):
    with pytest.raises(ZeroDivisionError, match="task 0"):
        Local(2).map(_touch_after, [(str(tmp_path), i) for i in range(20)])
    ran = len(list(tmp_path.iterdir()))
    assert ran < 19, f"all {ran} other tasks ran after the first had failed"


def test_workers_take_the_callers_warning_filters(capfd):
    """A warning a command would not show is not shown by its workers either (and raises in
    them under python -W error), on a real pool of spawned processes."""
    import warnings

    task = ("a library warning in a worker", UserWarning)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="a library warning in a worker"):
            Local(2).map(warnings.warn, [task, task])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Local(2).map(warnings.warn, [task, task]) == [None, None]
    assert "a library warning" not in capfd.readouterr().err


def test_reading_a_few_layers_takes_passes_sized_for_those_layers(tmp_path, monkeypatch):
    """Each pass decodes the row groups its steps touch whole: passes sized for every layer
    while one is read would decode each of its row groups once per pass (8 times here)."""
    import moetrace.trace.read as reader

    counts = np.random.default_rng(0).integers(1, 50, size=(8, 400, 16))
    rows = pl.DataFrame({"step": np.tile(np.repeat(np.arange(400), 16), 8),
                         "layer": np.repeat(np.arange(8, dtype=np.int32), 400 * 16),
                         "expert": np.tile(np.arange(16, dtype=np.int32), 8 * 400),
                         "tokens": counts.reshape(-1)})
    write_trace(rows, tmp_path / "t.parquet", TraceMetadata(n_experts=16))
    trace = read_trace(tmp_path / "t.parquet")
    assert trace.n_rows == 8 * 400 * 16
    monkeypatch.setattr(reader, "_STEP_CHUNK_ROWS", 400 * 16)  # one layer's rows a pass
    passes = []
    collect = pl.LazyFrame.collect
    monkeypatch.setattr(pl.LazyFrame, "collect",
                        lambda self, *a, **k: (passes.append(1), collect(self, *a, **k))[1])
    np.testing.assert_array_equal(trace.loads(layers=[5]).counts[0], counts[5])
    assert len(passes) == 1
    passes.clear()
    np.testing.assert_array_equal(trace.loads(layers=[1, 6]).counts, counts[[1, 6]])
    assert len(passes) == 2


def test_a_layer_is_analyzed_a_step_range_at_a_time(monkeypatch):
    """Beyond its counts, the analysis of a layer never makes an array of the layer's whole
    steps x experts (a float64 one would be twice the int32 counts): its statistics are
    computed a step range at a time, with the overlap the windows need, and agree with one
    range over the whole layer (to rounding; the states exactly)."""
    import tracemalloc

    from moetrace.states import analyze_loads, stats
    from moetrace.trace.shares import Loads

    rng = np.random.default_rng(4)
    steps, experts = 20_000, 256
    start, end = rng.dirichlet(np.ones(experts)), rng.dirichlet(np.ones(experts))
    settle = np.minimum(np.arange(steps) / 8_000, 1.0)[:, None]  # transient, then stable
    counts = rng.poisson(20_000 * ((1 - settle) * start + settle * end)).astype(np.int32)[None]
    loads = Loads(np.arange(steps), counts, (0,))
    _ = loads.totals
    whole_layer = steps * experts * 8
    monkeypatch.setattr(stats, "RANGE_CELLS", steps * experts)  # one range: the whole layer
    one = analyze_loads(loads, window=40, top_k=2)
    monkeypatch.setattr(stats, "RANGE_CELLS", 1 << 15)  # ranges of 160 steps (4 windows)
    tracemalloc.start()
    try:
        ranged = analyze_loads(loads, window=40, top_k=2, statistics=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < whole_layer / 4, f"{peak / 2**20:.1f} MiB traced"
    again = analyze_loads(loads, window=40, top_k=2)
    assert np.array_equal(again.stable, one.stable)
    assert np.array_equal(ranged.stable, one.stable)
    assert np.array_equal(ranged.online_stable, one.online_stable)
    assert ranged.step_stats == {} and ranged.window_stats == {}
    assert_same(to_json_dict(ranged), to_json_dict(one), rel=1e-9)
    for name, array in one.step_stats.items():
        np.testing.assert_allclose(again.step_stats[name], array, rtol=1e-9, err_msg=name)
    for name, array in one.window_stats.items():
        np.testing.assert_allclose(again.window_stats[name], array, rtol=1e-6, err_msg=name)


def test_analysis_chunks_are_merged_as_they_come_into_arrays_made_once(trace):
    """The merge takes the chunks one at a time from the executor: a chunk's analysis is let
    go of before the next is asked for, so the command holds one besides the merged arrays."""
    import gc
    import weakref

    from moetrace.scale import tasks
    from moetrace.states.analysis import Analysis

    settings = tasks.AnalyzeSettings(100, 1.0, 2.0, 1)
    handle, alive = trace.handle(), []

    def parts():
        for layer in range(trace.n_layers):
            gc.collect()
            assert not any(ref() is not None for ref in alive), "an earlier chunk is held"
            part = tasks.analyze_chunk(handle, [layer], settings)
            alive.append(weakref.ref(part))
            yield part
            del part

    merged = Analysis.merge(parts(), n_layers=trace.n_layers)
    whole = tasks.analyze_chunk(handle, list(range(trace.n_layers)), settings)
    assert to_json_dict(merged) == to_json_dict(whole)
    for name, array in whole.window_stats.items():
        assert np.array_equal(merged.window_stats[name], array), name
    assert np.array_equal(merged.online_stable, whole.online_stable)


def test_a_report_keeps_no_per_step_statistics(trace):
    """What only ``analyze --out`` writes (12 floats per step and layer) is not kept for a
    report or a replay: at 100,000 steps x 58 layers it was 560 MB in the command."""
    data = pipeline.backtest(trace, predictors=["naive"], horizons=[100], n_origins=2,
                             min_history=300, placement=None,
                             run=Execution(Local(2), ONE_LAYER))
    assert data.analysis.step_stats == {} and data.analysis.window_stats == {}
    full = pipeline.analyze(trace, window=data.span.state_window, run=Execution(Local(1)))
    assert np.array_equal(data.analysis.stable, full.stable)
    assert to_json_dict(data.analysis) == to_json_dict(full)


def test_shares_take_one_float64_array_of_the_counts_shape():
    """A 100,000-step layer's shares are 200 MB: made from the integer counts directly, not
    from a float64 copy of them first (which doubled the peak), and equal to that."""
    import tracemalloc

    from moetrace.trace.shares import Loads

    counts = np.random.default_rng(2).integers(0, 1000, size=(2, 5000, 64)).astype(np.int32)
    counts[..., 0] += 1
    tracemalloc.start()
    try:
        shares = Loads(np.arange(5000), counts, (0, 1)).shares
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.2 * shares.nbytes, f"{peak / shares.nbytes:.2f} x the shares"
    expected = counts.astype(np.float64)
    np.testing.assert_array_equal(shares, expected / expected.sum(axis=-1, keepdims=True))


def _same_backtest(parts, whole):
    assert np.array_equal(parts.origins, whole.origins) and parts.layers == whole.layers
    assert parts.predictors == whole.predictors and parts.seconds.keys() == whole.seconds.keys()
    assert parts.fallbacks == whole.fallbacks
    for key, scores in whole.scores.items():
        assert np.array_equal(parts.scores[key].fits, scores.fits)
        assert np.array_equal(parts.scores[key].steps_scored, scores.steps_scored)
        for metric, values in scores.metrics.items():
            assert np.array_equal(parts.scores[key].metrics[metric], values, equal_nan=True), \
                (key, metric)
        # coverage of every forecast (auto states intervals): what the calibration verdict reads
        assert (parts.scores[key].inside is None) == (scores.inside is None), key
        if scores.inside is not None:
            assert np.array_equal(parts.scores[key].inside, scores.inside, equal_nan=True), key
    assert parts.lookahead.keys() == whole.lookahead.keys()
    for h, values in whole.lookahead.items():
        assert np.array_equal(parts.lookahead[h], values, equal_nan=True)
    assert parts.constant_bound.keys() == whole.constant_bound.keys()
    for h, values in whole.constant_bound.items():
        assert np.array_equal(parts.constant_bound[h], values, equal_nan=True)
    assert np.array_equal(parts.stable, whole.stable)
    assert parts.example.origin == whole.example.origin
    assert parts.example.forecasts.keys() == whole.example.forecasts.keys()
    for name, forecast in whole.example.forecasts.items():
        assert np.array_equal(parts.example.forecasts[name], forecast), name


@pytest.mark.parametrize("width, ranges", [(2, 1), (3, 1), (6, 3)])
def test_backtest_units_smaller_than_a_chunk_give_the_whole_backtest(trace, width, ranges):
    """A stateful predictor (arima: its refit schedule) alone over every origin, the others
    over runs of origins that read only the steps they reach: joined, exactly the whole."""
    from dataclasses import replace

    from moetrace.backtest import BacktestResult, backtest
    from moetrace.pipeline import backtest_units
    from moetrace.predictors.base import PredictorOptions
    from moetrace.scale import tasks

    names = ("naive", "sw_avg", "arima", "drift", "auto")
    origins = np.array([400, 600, 800, 1000, 1200, 1399])
    settings = tasks.BacktestSettings(names, (100, 200), origins,
                                      PredictorOptions(horizons=(100, 200)), 50, 300)
    units = backtest_units(settings, 3, width)
    assert [u.predictors for u in units] == [("arima",)] + [
        ("naive", "sw_avg", "drift", "auto")] * ranges
    assert [u.lookahead_radius for u in units] == [None] + [50] * ranges
    assert np.array_equal(np.concatenate([u.origins for u in units[1:]]), origins)
    labels = pipeline.analyze(trace, window=100, run=Execution(Local(1))).stable
    handle = trace.handle()
    loads = trace.loads()
    for layer in range(trace.n_layers):
        whole = backtest(loads.select([layer]), list(names), (100, 200),
                         options=replace(settings.options), stable=labels[[layer]],
                         origins=origins, min_history=300, lookahead_radius=50)
        parts = [tasks.backtest_chunk(handle, [layer], unit, labels[[layer]]) for unit in units]
        _same_backtest(BacktestResult.join(parts, names), whole)


def test_a_unit_that_cannot_stand_alone_is_run_unsplit(trace):
    """Buckets of 500 steps: arima (30 buckets) fits at no origin and naive only once its
    history holds a bucket; alone, arima's unit and naive's first origins would be refused
    ('no predictor at any origin'), so the chunk runs whole and the report is the whole's."""
    from moetrace.predictors.base import PredictorOptions

    kwargs = dict(predictors=["naive", "arima"], horizons=[100, 200], n_origins=8,
                  min_history=300, placement=None, options=PredictorOptions(bucket=500))
    whole = pipeline.backtest(trace, run=Execution(Local(1)), **kwargs).result
    parts = pipeline.backtest(trace, run=Execution(Local(4), ONE_LAYER), **kwargs).result
    assert all(r.startswith("not fitted") for r in whole.fallbacks["arima"])
    assert whole.fallbacks["naive"][0].startswith("not fitted")
    _same_backtest(parts, whole)


def test_predictors_that_say_they_keep_no_state_forecast_alike_fresh_or_refitted(trace):
    """What lets a backtest run a predictor's origins as separate tasks: fitted at an origin
    after earlier fits, it forecasts what a fresh object fitted there forecasts."""
    from moetrace.predictors import REGISTRY
    from moetrace.predictors.base import PredictorOptions, make_predictor

    loads = trace.loads()
    options = PredictorOptions(horizons=(100, 200))
    pure = [name for name in sorted(REGISTRY)
            if not getattr(make_predictor(name, options), "stateful", True)]
    assert {"naive", "sw_avg", "drift", "auto"} <= set(pure)
    assert "arima" not in pure and "lstm" not in pure
    for name in pure:
        refitted = make_predictor(name, options)
        for origin in (500, 900):
            refitted.fit(loads.upto(origin)).forecast(200)
        fresh = make_predictor(name, options).fit(loads.upto(1300))
        refitted.fit(loads.upto(1300))
        assert np.array_equal(refitted.forecast(200), fresh.forecast(200)), name
        for h in (100, 200):
            a, b = refitted.uncertainty(h), fresh.uncertainty(h)
            assert (a is None) == (b is None), name
            if a is not None:
                assert np.array_equal(a.lower, b.lower) and np.array_equal(a.upper, b.upper)


def test_the_reports_example_holds_only_the_steps_its_figure_draws(trace, tmp_path):
    """The forecast figure draws a horizon either side of the example origin: that is what
    is read for it, not the example layer's every step."""
    from moetrace.report.figures import forecast_vs_actual

    data = pipeline.backtest(trace, predictors=["naive"], horizons=[100, 200], n_origins=3,
                             min_history=300, placement=None, run=Execution(Local(1)))
    ex = data.result.example
    assert data.example.steps[0] == ex.origin - 200 and data.example.steps[-1] == ex.origin + 200
    whole = trace.loads(layers=[data.result.layers[ex.layer]])
    old, new = forecast_vs_actual(data.result, whole), forecast_vs_actual(data.result, data.example)
    for a, b in zip(old.axes, new.axes):
        for x, y in zip(a.lines, b.lines):
            assert np.array_equal(x.get_xydata(), y.get_xydata())


def test_replay_forecasts_refit_one_object_and_feed_the_detector_once(trace, monkeypatch):
    """A replay re-plans every interval, so its forecast estimates grow with the trace: auto
    (a fit that is a function of the history alone) is one object refitted at each re-plan,
    its online detector fed only the steps since the last, in blocks of bounded size, with
    the estimates a fresh object gives (the feeding was quadratic in the steps, and one
    block of a 100,000-step history took 2 GB)."""
    from moetrace.placement.estimates import Estimates
    from moetrace.predictors import PredictorOptions, make_predictor
    from moetrace.predictors import auto
    from moetrace.states.online import OnlineDetector

    loads = trace.loads()
    fed = []
    update = OnlineDetector.update
    monkeypatch.setattr(OnlineDetector, "update",
                        lambda self, steps, counts: (fed.append(len(steps)),
                                                     update(self, steps, counts))[1])
    monkeypatch.setattr(auto, "DETECTOR_CELLS", 100 * trace.n_layers * trace.n_experts)
    estimates = Estimates(loads, 200)
    origins = [400, 600, 800, 1000, 1200, 1400]
    got = [estimates.forecast_fit(t, "auto") for t in origins]
    assert sum(fed) == loads.index(origins[-1]) and max(fed) == 100
    for t, estimate in zip(origins, got):
        model = make_predictor("auto", PredictorOptions(horizons=(200,)))
        expected = model.fit(loads.upto(t)).forecast(200).mean(axis=1)
        assert np.array_equal(estimate.shares, expected)
        assert estimate.fallback == model.fallback
        assert np.array_equal(estimate.uncertainty.lower, model.uncertainty(200).lower)


@pytest.mark.slow
def test_report_on_a_multi_node_ray_cluster_is_the_local_report(trace, tmp_path):
    """A real Ray cluster of three nodes started here (the head, where the command runs,
    with no CPUs for tasks, and two worker nodes of one CPU each, each with its own resource):
    `moetrace report --backend ray --ray-address ADDRESS` through the entry point gives the
    local backend's JSON, every validation range and chunk having run on the worker nodes; and
    while that cluster runs, `--backend ray` without an address runs on a cluster of its own."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    args = ["--predictors", "naive,sw_avg,arima", *FAST_ARGS, "--json"]

    def doc(result):
        assert result.returncode == 0, result.stderr
        d = json.loads(result.stdout)
        for volatile in ("created", "timings"):
            d.pop(volatile)
        d["placement"].pop("seconds")
        d["parameters"].pop("command")  # names the output directory, the one difference
        return d

    local = doc(run_cli("report", trace.path, "-o", str(tmp_path / "local"), "--workers", "1",
                        *args))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for node in ("node_a", "node_b"):
            cluster.add_node(num_cpus=1, resources={node: 1})
        cluster.wait_for_nodes()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MOETRACE_CHUNK_MEMORY", "1")  # every row group and layer a task
            on_ray = doc(run_cli("report", trace.path, "-o", str(tmp_path / "ray"),
                                 "--backend", "ray", "--ray-address", cluster.address, *args))
            # Ray's own default joins the cluster a machine last started (as this one is);
            # without --ray-address the command starts a cluster of its own, as it says
            own = run_cli("analyze", trace.path, "--backend", "ray", "--workers", "1",
                          "--json")
    finally:
        cluster.shutdown()
    assert_same(on_ray, local)
    assert own.returncode == 0, own.stderr
    serial = run_cli("analyze", trace.path, "--workers", "1", "--json")
    assert json.loads(own.stdout) == json.loads(serial.stdout)
