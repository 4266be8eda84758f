"""build_report end to end on a small simulated trace: JSON schema, HTML, Markdown, atomicity."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from report_data import FAST, small_trace

from moetrace.errors import OutputError, OutputExistsError, ParameterError
from moetrace.pipeline import build_report
from moetrace.report import SCHEMA_VERSION

ROW_FIELDS = {"predictor": str, "horizon": int, "state": str, "layer": (int, type(None)),
              "error_rate": float, "mean_error_ratio": float, "window_error": float,
              "imbalance_error": float, "noise_floor": float, "origins": int, "pairs": int,
              "zero_actuals": int, "error_rate_lower": (float, type(None)),
              "error_rate_upper": (float, type(None)), "fallback_rate": float,
              "constant_bound": float, "constant": bool}


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    return small_trace(tmp_path_factory.mktemp("trace"))


@pytest.fixture(scope="module")
def report(trace, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "rep"
    return build_report(trace, out, predictors=["naive", "sw_avg"], command="moetrace report x",
                        **FAST)


def test_json_follows_the_documented_schema(report):
    doc = json.loads((report.path / "report.json").read_text())
    assert doc["schema"] == "moetrace.report" and doc["schema_version"] == SCHEMA_VERSION
    assert {"trace", "parameters", "states", "origins", "results", "timings", "paper",
            "figures"} <= doc.keys()
    assert doc["trace"]["n_layers"] == 2 and doc["trace"]["n_experts"] == 8
    rows = doc["results"]
    for row in rows:
        for field, kind in ROW_FIELDS.items():
            assert isinstance(row[field], kind), (field, row)
        assert row["state"] in ("transient", "stable", "all")
        assert 0 <= row["error_rate"] <= 2 and 0 <= row["noise_floor"] < 0.5
        if row["error_rate_lower"] is not None:  # the centre lies inside its interval
            assert row["error_rate_lower"] <= row["error_rate"] <= row["error_rate_upper"]
        else:
            assert row["origins"] == 1
        if row["constant"]:  # no forecast held constant scores below the constant bound
            assert row["error_rate"] >= row["constant_bound"] - 1e-12
    keys = {(r["predictor"], r["horizon"], r["state"], r["layer"]) for r in rows}
    for p in ("naive", "sw_avg"):
        for h in (100, 200):
            assert (p, h, "all", None) in keys and (p, h, "all", 0) in keys
    assert len(keys) == len(rows)
    assert len(doc["origins"]) == 5
    assert all(len(o["stable"]) == 2 for o in doc["origins"])


def test_placement_section_replays_every_policy_on_the_default_cluster(report, trace,
                                                                      tmp_path):
    doc = json.loads((report.path / "report.json").read_text())
    placed = doc["placement"]
    assert placed["schema"] == "moetrace.placement-replay" and placed["skipped"] is None
    # 8 experts: the default cluster is 8 GPUs with one redundant slot each
    assert placed["cluster"]["gpus"] == 8 and placed["cluster"]["replicas"] == 16
    assert placed["interval"] == 100  # re-planned every (smallest) horizon
    overall = {r["policy"]: r for r in placed["results"] if r["layer"] is None
               and r["state"] == "all"}
    assert set(overall) == {"static", "window", "forecast", "adaptive", "hindsight"}
    assert placed["predictors"]["forecast"] == "naive"  # the report's first predictor
    assert overall["hindsight"]["balancedness"] >= overall["static"]["balancedness"]
    none = build_report(trace, tmp_path / "none", predictors=["naive"], placement=None, **FAST)
    assert none.document.get("placement") is None
    md = (none.path / "report.md").read_text()
    assert "What would these forecasts" not in md
    assert not (none.path / "figures" / "placement.png").exists()


def test_json_numbers_match_the_returned_rows(report):
    doc = json.loads((report.path / "report.json").read_text())
    assert doc["results"] == [r.to_dict() for r in report.rows]


def test_html_is_self_contained_with_every_figure(report):
    html = (report.path / "report.html").read_text()
    figures = sorted(p.name for p in (report.path / "figures").glob("*.png"))
    assert figures == sorted(["error_vs_origin_100.png", "error_vs_origin_200.png",
                              "forecast_vs_actual.png", "error_by_layer.png", "placement.png"])
    embedded = re.findall(r'data-file="figures/([^"]+)" src="data:image/png;base64,', html)
    assert sorted(embedded) == figures
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', html)
    assert "http" not in html.split("<body>")[0]
    assert "<script" not in html and "<link" not in html


def test_markdown_has_every_section_and_figure(report):
    md = (report.path / "report.md").read_text()
    for heading in ("## Bottom line", "## The trace", "## States per layer",
                    "## Every predictor, horizon and state", "## Per layer",
                    "## Next to the paper", "## How the numbers were computed",
                    "## What would these forecasts have bought?"):
        assert heading in md
    assert md.index("## Bottom line") < md.index("## The trace")  # the answer comes first
    for fig in (report.path / "figures").glob("*.png"):
        assert f"(figures/{fig.name})" in md
    assert "the paper's figures on its own traces" in md
    assert "moetrace report x" in md


def test_existing_output_is_not_clobbered(trace, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        build_report(trace, out, predictors=["naive"], **FAST)
    with pytest.raises(OutputError, match="did not write"):  # a user's folder, even with force
        build_report(trace, out, predictors=["naive"], force=True, **FAST)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    report = tmp_path / "report"
    build_report(trace, report, predictors=["naive"], **FAST)
    (report / "stale.txt").write_text("from an older version")
    build_report(trace, report, predictors=["naive"], force=True, **FAST)  # ours: replaced
    assert not (report / "stale.txt").exists() and (report / "report.json").exists()


def test_report_failing_while_written_leaves_nothing_behind(trace, tmp_path, monkeypatch):
    import moetrace.report.write as build

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build, "render_html", broken)  # after report.json and report.md
    out = tmp_path / "rep"
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(trace, out, predictors=["naive"], **FAST)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    build_report(trace, out, predictors=["naive"], **FAST)
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(build, "render_html", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(trace, out, predictors=["naive"], force=True, **FAST)
    assert [p.name for p in tmp_path.iterdir()] == ["rep"]
    assert sorted(p.name for p in out.iterdir()) == before  # the previous report, whole


def test_unknown_predictor_is_refused_before_any_work(tmp_path):
    with pytest.raises(ParameterError, match="unknown predictor 'nope'"):
        build_report(tmp_path / "missing.parquet", tmp_path / "out", predictors=["nope"])


def test_the_bottom_line_follows_its_json_contract(trace, tmp_path):
    report = build_report(trace, tmp_path / "r", predictors=["naive", "sw_avg", "auto"],
                          horizons=(100, 200), n_origins=8, min_history=200)
    doc = report.document
    assert doc["bottom_line"], "no bottom line"
    assert doc["parameters"]["constant"] == {"naive": True, "sw_avg": False,
                                             "auto": doc["parameters"]["constant"]["auto"]}
    ranked = 0
    for b in doc["bottom_line"]:
        rows = {r["predictor"]: r for r in doc["results"] if r["layer"] is None
                and r["horizon"] == b["horizon"] and r["state"] == b["state"]}
        assert isinstance(b["origins"], int) and isinstance(b["pairs"], int)
        assert b["ranked"] == (b["origins"] >= 5 and b["pairs"] >= 10)
        if not b["ranked"]:
            assert b["best"] is None and b["error_rate"] is None and b["verdicts"] == {}
            assert b["reason"].startswith("too few origins to rank")
            continue
        ranked += 1
        best = rows[b["best"]]
        assert b["error_rate"] == best["error_rate"]  # the best's row, same centre
        assert b["constant_bound"] == best["constant_bound"]
        assert best["error_rate"] == min(r["error_rate"] for r in rows.values()
                                         if r["fallback_rate"] <= 0.5)
        assert best["fallback_rate"] <= 0.5
        assert set(b["verdicts"]) == set(rows) - {b["best"]}
        assert set(b["verdicts"].values()) <= {"better", "no clear difference", "worse"}
        for name, verdict in b["verdicts"].items():
            d = b["differences"][name]  # name - best, on their common pairs
            assert d["lower"] <= d["mean_difference"] <= d["upper"]
            assert verdict == ("worse" if d["lower"] > 0 else "better" if d["upper"] < 0
                               else "no clear difference")
        naive = rows["naive"]
        assert b["gain_over_naive"] == pytest.approx(
            1 - best["error_rate"] / naive["error_rate"])
    assert ranked, "no cell was ranked: the test says nothing"
    assert doc["headline"].startswith(f"Use {doc['recommendation']['predictor']}: ")
    assert doc["headline"].count(". ") == 0 and doc["headline"].endswith(".")
    md = (tmp_path / "r" / "report.md").read_text()
    assert md.split("\n\n")[1] == doc["headline"]  # the first thing after the title
    from html import escape

    html = (tmp_path / "r" / "report.html").read_text()
    body = html.split("<body>")[1]
    assert body.index(f'<p class="headline">{escape(doc["headline"])}</p>') < \
        body.index("<h2>Bottom line</h2>") < body.index("<table>")


def test_the_calibration_section_ends_in_its_verdict_on_the_rows_coverage(trace, tmp_path):
    """The one-line calibration verdict is in report.json, ends the calibration section of
    report.md, and quotes the coverage of the report's own rows (every forecast counted)."""
    report = build_report(trace, tmp_path / "r", predictors=["naive", "auto"],
                          horizons=(100, 200), n_origins=6, min_history=200, placement=None)
    doc = report.document
    assert list(doc["calibration_verdict"]) == ["auto"]  # naive states no interval
    line = doc["calibration_verdict"]["auto"]
    state = re.search(r"intervals, (\w+) state", line).group(1)
    assert state in ("stable", "transient")
    for h in (100, 200):
        row = next(r for r in doc["results"] if r["predictor"] == "auto" and r["horizon"] == h
                   and r["state"] == state and r["layer"] is None)
        assert f"{100 * row['coverage']:.0f}% at {h:,} steps" in line
    md = (tmp_path / "r" / "report.md").read_text()
    section = md.split("## Can the forecast's own confidence be believed?")[1].split("\n## ")[0]
    assert section.strip().endswith(line)


def test_the_headline_says_what_re_planning_buys_in_modeled_seconds_and_the_setting(
        trace, tmp_path):
    from moetrace.display import format_seconds
    from moetrace.pipeline import recommend
    from moetrace.placement import Cluster, default_cluster

    doc = build_report(trace, tmp_path / "r", predictors=["naive", "sw_avg"], **FAST).document
    placed = doc["placement"]
    times = {r["policy"]: r["time_vs_balanced"] for r in placed["results"]
             if r["layer"] is None and r["state"] == "all"}
    gain = doc["recommendation"]["placement"]
    assert gain["time_vs_balanced"] == {k: times[k] for k in ("forecast", "static", "window")}
    assert gain["saving_vs_static"] == pytest.approx(1 - times["forecast"] / times["static"])
    # the seconds are the replay's own verdict: its time model, in one place
    verdict = placed["verdict"]
    assert gain["seconds"] == verdict and verdict["steps"] == 1500
    best = next(r for r in placed["results"] if r["policy"] == verdict["policy"]
                and r["layer"] is None and r["state"] == "all")
    assert verdict["net_seconds_saved"] == best["net_seconds_saved"] == pytest.approx(
        best["compute_seconds_saved"] - best["move_seconds"])
    net = verdict["net_seconds_saved"]
    assert (f"every {placed['interval']:,} steps ({verdict['policy']}, the best policy "
            f"replayed) {'saves' if net > 0 else 'loses'} {format_seconds(abs(net))} of "
            "modeled MoE time over 1,500 steps against the static placement") in doc["headline"]
    # the placement section's recommendation is plan --recommend's on the same GPUs, the
    # default cluster's redundant slots searched
    found = placed["recommendation"]
    assert default_cluster(8) == Cluster(gpus=8, redundant=8)
    alone = recommend(trace, Cluster(gpus=8), predictor="naive").document(str(trace))
    assert found["skipped"] is None
    for key in ("recommendation", "runner_up", "static", "pays", "sentence", "searched"):
        assert found[key] == alone[key], key
    assert gain["setting"] == {"pays": alone["pays"], "setting": alone["setting"],
                               **alone["recommendation"]}
    if alone["pays"]:
        assert f"the setting to run: {alone['setting']}" in doc["headline"]
    else:
        assert doc["headline"].endswith("no re-plan setting searched pays for its moves: "
                                        "keep the static placement.")
    md = (tmp_path / "r" / "report.md").read_text()
    assert "The setting to pick (as moetrace plan --recommend gives it): " \
        + alone["sentence"] in md
    none = build_report(trace, tmp_path / "n", predictors=["naive"], placement=None, **FAST)
    assert none.document["recommendation"]["placement"] is None
    assert "placement" not in none.document["headline"]


def test_a_trace_too_short_for_the_grid_says_why_no_setting_was_searched(tmp_path):
    from moetrace.simulate import simulate_trace

    path = simulate_trace(tmp_path / "t.parquet", preset="gpt3-125m", steps=900, layers=2,
                          experts=8, tokens_per_step=20_000, seed=3)
    doc = build_report(path, tmp_path / "r", predictors=["naive"], **FAST).document
    found = doc["placement"]["recommendation"]
    assert found["skipped"].startswith("no setting searched: the trace spans")
    assert doc["recommendation"]["placement"]["setting"] is None
    assert "setting to run" not in doc["headline"]
    assert f"The setting to pick: {found['skipped']}." in \
        (tmp_path / "r" / "report.md").read_text()


def test_a_50_step_trace_gets_a_report_with_notes_on_what_is_unreliable(tmp_path):
    from conftest import long_frame

    from moetrace.trace import TraceMetadata, write_trace

    rng = np.random.default_rng(0)
    counts = rng.multinomial(4, np.ones(8) / 8, size=(2, 50))  # few tokens per step
    path = tmp_path / "short.parquet"
    write_trace(long_frame(counts), path, TraceMetadata(top_k=1))
    report = build_report(path, tmp_path / "r", predictors=["naive", "sw_avg", "arima"])
    params = report.document["parameters"]
    assert params["min_history"] == 25 and max(params["horizons"]) <= 25
    assert any("too few for the default" in n for n in params["shrunk"])
    assert any("state window was shrunk" in n for n in params["shrunk"])
    md = (tmp_path / "r" / "report.md").read_text()
    assert "horizons of" in md and "say little about a placement" in md
    # arima cannot be fitted on 25 steps of history: said, not an error
    arima = next(n for n in report.document["notes"] if n["predictor"] == "arima")
    [fallback] = arima["fallbacks"]  # one reason, once, with its count
    assert fallback["origins"] == arima["of"] and "needs 600 steps" in fallback["reason"]
    assert sum("arima could not be fitted at 12 of 12 origins" in line
               for line in md.splitlines()) == 1
    [recorded] = report.document["fallbacks"]["arima"]
    assert len(recorded["origins"]) == arima["of"]


def test_online_state_labels_change_only_the_labels(trace, tmp_path):
    hind = build_report(trace, tmp_path / "h", predictors=["naive"], **FAST)
    online = build_report(trace, tmp_path / "o", predictors=["naive"], states="online", **FAST)
    assert online.document["parameters"]["states"] == "online"
    assert online.document["states"]["labels"] == "online"
    all_h = [r for r in hind.document["results"] if r["state"] == "all"]
    all_o = [r for r in online.document["results"] if r["state"] == "all"]
    assert [r["error_rate"] for r in all_h] == [r["error_rate"] for r in all_o]
