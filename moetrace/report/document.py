"""The report's content as blocks, built from the report.json document alone.

Markdown and HTML both render these blocks, so the two read the same and every number in
them is one of report.json's.
"""

from __future__ import annotations

from moetrace.display import format_bytes, format_seconds
from moetrace.report.blocks import Block, Bullets, Code, Heading, Image, Paragraph, Table
from moetrace.report.paper import closest_model

_STATE_ORDER = {"stable": 0, "transient": 1, "all": 2}


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _steps(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def with_interval(row: dict, metric: str = "error_rate") -> str:
    """A centre with its 95% interval over origins: "1.32% (1.27–1.38%)"."""
    centre, lo, hi = row.get(metric), row.get(f"{metric}_lower"), row.get(f"{metric}_upper")
    if centre is None:
        return "—"
    if lo is None or hi is None:
        return f"{pct(centre)} (one origin)"
    return f"{pct(centre)} ({pct(lo)[:-1]}–{pct(hi)})"


def credited(name: str, cell: dict) -> str:
    """A predictor's name with the origins of the cell at which it did not make its own
    forecast: "lstm (fell back 12/12)"."""
    count = cell.get("fell_back", {}).get(name, 0)
    return f"{name} (fell back {count}/{cell['origins']})" if count else name


def against_best(cell: dict) -> str:
    """The paired verdicts of a cell, grouped: "worse: naive, sw_avg; no clear difference:
    arima", or why the cell names no best."""
    if not cell["ranked"]:
        return cell["reason"] or "—"
    groups = []
    for verdict in ("better", "no clear difference", "worse"):
        names = [credited(n, cell) for n, v in cell["verdicts"].items() if v == verdict]
        if names:
            groups.append(f"{verdict}: {', '.join(names)}")
    return "; ".join(groups) or "no other predictor"


def report_blocks(doc: dict) -> list[Block]:
    """Every section of the report, in reading order: the answer first."""
    name = doc["trace"]["path"].rstrip("/").split("/")[-1]
    return [
        Heading(1, f"moetrace report: {name}"),
        Paragraph(doc["headline"], lead=True),
        *_bottom_line_section(doc),
        *_calibration_section(doc),
        *_placement_section(doc),
        *_trace_section(doc),
        *_states_section(doc),
        *_headline_section(doc),
        *_layer_section(doc),
        *_paper_section(doc),
        *_method_section(doc),
    ]


def _rows(doc: dict, **keys) -> list[dict]:
    return [r for r in doc["results"] if all(r[k] == v for k, v in keys.items())]


def _times(value: float | None, base: float | None) -> str:
    return "—" if value is None or not base else f"{value / base:.2f}x"


def bottom_line_rows(doc: dict) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The bottom-line table (headers, rows), shared by the report and the terminal."""
    headers = ("horizon", "state", "origins", "pairs", "best", "error rate (95% interval)",
               "constant bound", "noise floor", "vs naive", "the others against the best")
    rows = []
    for b in doc["bottom_line"]:
        rows.append((f"{b['horizon']:,}", b["state"], str(b["origins"]), str(b["pairs"]),
                     credited(b["best"], b) if b["best"] else "—",
                     with_interval(b), pct(b["constant_bound"]), pct(b["noise_floor"]),
                     versus_naive(b), against_best(b)))
    return headers, rows


def versus_naive(cell: dict) -> str:
    """The best's error against naive's, as a relative change ("26% lower")."""
    gain = cell["gain_over_naive"]
    if gain is None or cell["best"] == "naive":
        return "—"
    return (f"{gain * 100:.0f}% lower" if gain > 0.0005 else
            f"{-gain * 100:.0f}% higher" if gain < -0.0005 else "same")


def note_lines(doc: dict) -> list[str]:
    """One line per predictor clearly worse than naive somewhere, one per predictor and
    reason it fell back (with the number of origins), one per default the report shrank for
    a short trace, one per predictor left out."""
    lines = [f"note: {text}" for text in doc["parameters"].get("shrunk", [])]
    for n in doc["notes"]:
        if n["worse_than_naive"]:
            where = ", ".join(f"{w['horizon']:,} steps ({w['state']}, "
                              f"{w['mean_difference'] * 100:+.2f} points)"
                              for w in n["worse_than_naive"])
            lines.append(f"{n['predictor']}: clearly worse than naive at {where}: "
                         f"{n['reason']}")
        for f in n["fallbacks"]:
            what, reason = "fell back", f["reason"]
            if reason.startswith("not fitted: "):
                what, reason = "could not be fitted", reason[len("not fitted: "):]
            lines.append(f"{n['predictor']} {what} at {f['origins']} of {n['of']} origins: "
                         f"{reason}")
    for item in doc["parameters"].get("skipped", []):
        lines.append(f"{item['predictor']} was not run: {item['reason']}")
    return lines


def _bottom_line_section(doc: dict) -> list[Block]:
    headers, rows = bottom_line_rows(doc)
    notes = note_lines(doc)
    blocks: list[Block] = [
        Heading(2, "Bottom line"),
        Table(headers, tuple(rows), name="bottom-line"),
        Paragraph("Per horizon and state: the predictor with the lowest error rate (the mean "
                  "over origins of the mean over layers, with its 95% interval) among those "
                  "that made their own forecasts at half the origins or more, and every other "
                  "predictor against it on the same (origin, layer) pairs: better or worse "
                  "only where the 95% interval of the mean paired difference excludes zero. "
                  "The layers of one origin count as one observation; a cell with fewer than "
                  "5 origins or 10 pairs names no best. Constant bound: the lowest error rate "
                  "any forecast held constant over the horizon can score on these pairs "
                  "(naive's and every plain window mean's are at least that); noise floor: "
                  "what sampling noise alone gives. \"fell back k/n\": at k of the n origins "
                  "the predictor forecast with a simpler rule (see the notes)."),
    ]
    if notes:
        blocks += [Paragraph("Notes:"), Bullets(tuple(notes))]
    return blocks


def _calibration_section(doc: dict) -> list[Block]:
    rows = [r for r in doc["results"] if r["layer"] is None and r["coverage"] is not None]
    if not rows:
        return []
    table = []
    for r in sorted(rows, key=lambda r: (r["predictor"], r["horizon"],
                                         _STATE_ORDER[r["state"]])):
        points = [c for c in doc["calibration"] if c["predictor"] == r["predictor"]
                  and c["horizon"] == r["horizon"] and (r["state"] == "all" or
                                                        c["stable"] == (r["state"] == "stable"))]
        table.append((r["predictor"], f"{r['horizon']:,}", r["state"], pct(r["coverage"], 1),
                      pct(r["expected_error"]), pct(r["error_rate"]),
                      _rank_correlation(points)))
    blocks: list[Block] = [
        Heading(2, "Can the forecast's own confidence be believed?"),
        Paragraph("A predictor that states its uncertainty (auto) gives, with every forecast, "
                  "80% intervals of each expert's mean share over the horizon and each layer's "
                  "expected error rate, both from the history's own past errors. Coverage: "
                  "the share of (origin, layer, expert) cases whose actual mean share fell "
                  "inside the interval, over every forecast: one made without an interval "
                  "counts as not covered (80% is calibrated). Expected against realised: mean "
                  "error rates, and their rank correlation across (origin, layer) pairs "
                  "(1: the forecast knew when it would be wrong)."),
        Table(("predictor", "horizon", "state", "coverage (target 80%)", "expected error",
               "realised error", "rank correlation"), tuple(table)),
    ]
    for fig in doc["figures"]:
        if fig["file"].startswith("figures/calibration"):
            blocks.append(Image(fig["file"], fig["caption"]))
    blocks += [Paragraph(line) for line in doc.get("calibration_verdict", {}).values()]
    return blocks


def _placement_section(doc: dict) -> list[Block]:
    placed = doc.get("placement")
    if not placed:
        return []
    if placed.get("skipped"):
        return [Heading(2, "What would these forecasts have bought?"),
                Paragraph(f"Placement {placed['skipped']}.")]
    c = placed["cluster"]
    table = [(r["policy"], r["state"], pct(r["balancedness"], 1),
              pct(r["balancedness_p5"], 1), f"{r['time_vs_balanced']:.2f}x",
              f"{r['replans']}", f"{r['replicas_moved']:,}", format_bytes(r["bytes_moved"]),
              format_seconds(r["move_seconds"]), format_seconds(r["net_seconds_saved"]))
             for r in placed["results"] if r["layer"] is None]
    gaps = [f"{name} closes {pct(share, 0)}" for name, share in
            placed["gap_closed"]["all"].items() if share is not None]
    stable_gaps = [f"{name} {pct(share, 0)}" for name, share in
                   placed["gap_closed"]["stable"].items() if share is not None]
    text = (f"Every policy replayed over the trace on {c['gpus']} GPUs with {c['replicas']} "
            f"expert slots ({c['rebalance']} planner), re-planning every "
            f"{placed['interval']:,} steps from step {placed['start']:,}: static (no "
            "re-planning, no replicas), window (the last "
            f"{placed['window']:,} steps' counts, as vLLM), forecast (the "
            f"{placed['predictors'].get('forecast', 'chosen')} predictor's mean forecast over "
            "the interval), adaptive (state-aware: transient "
            "layers re-planned every quarter interval from recent counts, stable layers only "
            "when the forecast says a new plan gains) and hindsight (planned knowing the "
            "interval's actual steps: a reference, which another policy may beat, "
            "not a ceiling). Balanced: mean / max GPU tokens "
            "per layer and step (1 = perfect), its mean and 5th percentile; time: modeled MoE "
            "compute over a perfectly balanced step; moves: replicas placed on a GPU that did "
            "not hold them, and their bytes at "
            f"{placed['bytes_per_param']} bytes per parameter; move and net seconds: the time "
            "model's (docs/placement.md) seconds of moves, and the modeled MoE compute seconds "
            "saved against the static placement less them, over the replay.")
    blocks: list[Block] = [
        Heading(2, "What would these forecasts have bought?"),
        Paragraph(text),
        Table(("policy", "state", "balanced", "p5", "time", "re-plans", "moves",
               "bytes moved", "move s", "net s saved"), tuple(table)),
    ]
    found = placed.get("recommendation") or {}
    if found.get("skipped"):
        blocks.append(Paragraph(f"The setting to pick: {found['skipped']}."))
    elif found:
        runner = found["runner_up"]
        searched = found["searched"]
        blocks.append(Paragraph(
            f"The setting to pick (as moetrace plan --recommend gives it): "
            f"{found['sentence']} Searched: re-plan intervals "
            f"{', '.join(f'{v:,}' for v in searched['intervals'])}, load windows "
            f"{', '.join(f'{v:,}' for v in searched['windows'])}, redundant slots "
            f"{', '.join(str(v) for v in searched['redundant'])}, policies "
            f"{', '.join(searched['policies'])}"
            + ("" if runner is None else
               f"; runner-up: {runner['policy']} every {runner['interval']:,} steps with "
               f"{runner['redundant']} redundant slots, "
               f"{format_seconds(runner['net_seconds_saved'])} net")
            + f"; the static placement balances {pct(found['static']['balancedness'], 1)}."))
    if gaps:
        blocks.append(Paragraph("Of the balancedness gap between window and hindsight: "
                                + "; ".join(gaps) + (f" (stable state: "
                                                     f"{', '.join(stable_gaps)})"
                                                     if stable_gaps else "") + "."))
    for fig in doc["figures"]:
        if fig["file"].startswith("figures/placement"):
            blocks.append(Image(fig["file"], fig["caption"]))
    return blocks


def _rank_correlation(points: list[dict]) -> str:
    if len(points) < 3:
        return "—"
    from scipy.stats import spearmanr

    rho = spearmanr([p["expected_error"] for p in points],
                    [p["error_rate"] for p in points]).statistic
    return "—" if rho != rho else f"{rho:.2f}"


def _trace_section(doc: dict) -> list[Block]:
    t = doc["trace"]
    gaps = t["gaps"]
    gap_text = "none" if not gaps else f"{len(gaps)} ({sum(b - a + 1 for a, b in gaps):,} steps)"
    rows = [
        ("file", t["path"]),
        ("model", t["model"] or "not stated"),
        ("MoE layers", str(t["n_layers"])),
        ("experts per layer", str(t["n_experts"])),
        ("top-k", str(t["top_k"]) if t["top_k"] else "not stated (1 assumed)"),
        ("steps", f"{t['first_step']:,} .. {t['last_step']:,} ({t['n_steps']:,} recorded)"),
        ("sampling interval", "every step" if t["interval"] == 1 else
         f"every {t['interval']:,} steps (" + ", ".join(
             f"a {int(h):,}-step horizon holds {n:,} samples"
             for h, n in t["samples_per_horizon"].items()) + ")"),
        ("integrity", "page checksums verified" if t["checksummed"] else
         "no checksums: corruption cannot be detected"),
        ("missing steps (gaps)", gap_text),
        ("tokens per step (per layer, median)", f"{t['tokens_per_step']:,}"),
        ("source", t["source"] or "not stated"),
    ]
    return [Heading(2, "The trace"), Table(("property", "value"), tuple(rows))]


def _segments(layer: dict) -> str:
    return "; ".join(f"{s['state']} {s['start']:,}–{s['end']:,}" for s in layer["segments"])


def _states_section(doc: dict) -> list[Block]:
    s = doc["states"]
    model = s["model_stable_from"]
    verdict = (f"All layers are stable from step {model:,}." if model is not None
               else "Not every layer reaches the stable state by the last step.")
    rows = tuple(
        (str(layer["layer"]), _steps(layer["stable_from"]), _steps(layer["online_stable_from"]),
         "—" if layer["detection_delay"] is None else f"{layer['detection_delay']:+,}",
         _segments(layer),
         pct(layer["noise_floor"].get("transient")), pct(layer["noise_floor"].get("stable")))
        for layer in s["layers"])
    labels = ("hindsight: the segmentation of the whole trace, as the paper" if
              s["labels"] == "hindsight" else
              "online: what a live job believed at the origin, from the steps before it")
    return [
        Heading(2, "States per layer"),
        Paragraph(f"{verdict} States come from moetrace analyze (window {s['window']} steps); "
                  f"a backtest origin takes each layer's state at the origin step ({labels}). "
                  "Online from: the stable onset the online detector believes in at the last "
                  "step; delay: the step it called it minus the hindsight onset. Segments end "
                  "exclusive. Noise floor: the per-step error rate a perfect predictor of the "
                  "underlying shares would still have, from sampling noise alone."),
        Table(("layer", "stable from", "online from", "delay", "segments",
               "noise floor (transient)", "noise floor (stable)"), rows),
    ]


def _headline_section(doc: dict) -> list[Block]:
    rows = sorted(_rows(doc, layer=None),
                  key=lambda r: (r["horizon"], _STATE_ORDER[r["state"]], r["error_rate"]))
    constant = doc["parameters"].get("constant", {})
    table = tuple(
        (r["predictor"] + (" (constant)" if constant.get(r["predictor"]) else ""),
         f"{r['horizon']:,}", r["state"], with_interval(r), pct(r["window_error"]),
         pct(r["mean_error_ratio"]), pct(r["imbalance_error"]), str(r["origins"]),
         str(r["pairs"]), _share(r["fallback_rate"]), pct(r["constant_bound"]),
         pct(r["noise_floor"]), pct(r["lookahead"]))
        for r in rows)
    blocks: list[Block] = [
        Heading(2, "Every predictor, horizon and state"),
        Paragraph("Every figure is the mean over origins of the mean over the layers in that "
                  "state there (the error rate with its 95% interval over origins); origins "
                  "and pairs count the (origin, layer) pairs behind a row; fell back: the "
                  "share of the origins at which the predictor forecast with a simpler rule. "
                  "The constant bound is a true lower bound for the predictors marked "
                  "(constant), whose every forecast here was held constant over the horizon; "
                  "the noise floor and the look-ahead reference (the error of a centred "
                  "moving average of the actual shares, which sees the future but can be "
                  "beaten) are references, over the same pairs (docs/metrics.md)."),
        Table(("predictor", "horizon", "state", "error rate (95% interval)", "window error",
               "mean error ratio", "imbalance error", "origins", "pairs", "fell back",
               "constant bound", "noise floor", "look-ahead reference"), table),
    ]
    for fig in doc["figures"]:
        if fig["file"].startswith("figures/error_vs_origin"):
            blocks.append(Image(fig["file"], fig["caption"]))
    return blocks


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"


def _layer_section(doc: dict) -> list[Block]:
    predictors = doc["parameters"]["predictors"]
    layers = [layer["layer"] for layer in doc["states"]["layers"]]
    blocks: list[Block] = [Heading(2, "Per layer"), Paragraph(
        "Error rate per layer; in brackets the origins behind it. Shallow layers usually "
        "fluctuate more and for longer, so they are harder to predict.")]
    for h in doc["parameters"]["horizons"]:
        for state in ("stable", "transient", "all"):
            found = _rows(doc, horizon=h, state=state)
            if not any(r["layer"] is not None for r in found):
                continue
            cells = []
            for layer in layers:
                by = {r["predictor"]: r for r in found if r["layer"] == layer}
                if not by:
                    continue
                any_row = next(iter(by.values()))
                cells.append((str(layer), *(
                    f"{pct(by[p]['error_rate'])} ({by[p]['origins']})" if p in by else "—"
                    for p in predictors), pct(any_row["noise_floor"])))
            blocks.append(Table(("layer", *predictors, "noise floor"), tuple(cells),
                                caption=f"{h:,}-step horizon, "
                                + ("all states" if state == "all" else f"{state} state")))
    for fig in doc["figures"]:
        if fig["file"].startswith(("figures/error_by_layer", "figures/forecast_vs_actual")):
            blocks.append(Image(fig["file"], fig["caption"]))
    return blocks


def _paper_section(doc: dict) -> list[Block]:
    paper = doc["paper"]
    mine = closest_model(doc["trace"]["n_experts"])
    rows = []
    for fig in paper["figures"]:
        ours = None
        if fig["model"] == mine:
            found = _rows(doc, predictor=fig["predictor"], horizon=fig["horizon"],
                          state="stable", layer=None)
            ours = found[0] if found else None
        if ours and (ours["fallback_rate"] or 0) > 0.5:  # not the predictor the paper ran
            moved = f"— (fell back at {ours['fallback_rate'] * 100:.0f}% of origins)"
            rows.append((fig["model"], fig["predictor"], f"{fig['horizon']:,}",
                         f"{fig['qualifier']} {fig['error'] * 100:g}% ({fig['note']})",
                         moved, "—", pct(ours["noise_floor"]), "—"))
            continue
        rows.append((fig["model"], fig["predictor"], f"{fig['horizon']:,}",
                     f"{fig['qualifier']} {fig['error'] * 100:g}% ({fig['note']})",
                     pct(ours["error_rate"]) if ours else "—",
                     pct(ours["mean_error_ratio"]) if ours else "—",
                     pct(ours["noise_floor"]) if ours else "—",
                     _times(ours["error_rate"], ours["noise_floor"]) if ours else "—"))
    return [
        Heading(2, "Next to the paper"),
        Paragraph(f"{paper['caveat']} Source: {paper['citation']}. This trace is compared with "
                  f"the paper's {mine} setup (the one with the nearest number of experts); "
                  "moetrace's figures are from this trace, stable state, the rows' centre; a "
                  "predictor that fell back at more than half the origins is not the one the "
                  "paper ran and gets no figure; the other setup's rows are shown for "
                  "reference only."),
        Table(("paper's model", "predictor", "horizon", "the paper's figure (its own trace)",
               "this trace: error rate", "this trace: mean error ratio", "noise floor",
               "error rate / noise floor"),
              tuple(rows)),
    ]


def _method_section(doc: dict) -> list[Block]:
    p = doc["parameters"]
    origins = doc["origins"]
    spacing = f"every {p['stride']:,} steps" if p["stride"] else "spread evenly"
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in doc["timings"]["backtest_seconds"].items())
    return [
        Heading(2, "How the numbers were computed"),
        Paragraph(f"Rolling origins: {len(origins)} origins ({spacing}) from step "
                  f"{origins[0]['step']:,} (the first with {p['min_history']:,} steps of history) "
                  f"to step {origins[-1]['step']:,}. At each origin t every predictor is fitted "
                  "on the steps up to and including t only, forecasts steps t+1 .. t+H once for "
                  "the longest horizon that fits before the trace ends, and each horizon is "
                  "scored on its prefix against the actual shares (steps missing from the trace "
                  "are skipped). Metrics, for forecast shares f and actual shares a of one layer "
                  "(definitions and a worked example: docs/metrics.md in moetrace):"),
        Bullets((
            "error rate: mean over the H steps of sum over experts of |f - a| (twice the total "
            "variation distance; the weighted absolute percentage error of the layer's loads);",
            "mean error ratio: mean over the H steps and the experts of |f - a| / a, skipping "
            "a = 0 (the paper-style reading);",
            "window error: sum over experts of |mean f - mean a|, the means over the H steps "
            "(what a placement held for H steps pays for);",
            "imbalance error: mean over the H steps of |r(f) - r(a)| / r(a), r = max/mean load;",
            "noise floor: per-step error rate that sampling noise alone gives (moetrace analyze);",
            "constant bound: per expert, the median of its actual shares over the horizon is "
            "the constant with the least summed absolute error, so the sum of those least "
            "errors over the H steps bounds the error rate of every forecast held constant "
            "over the horizon (naive, a plain window mean) from below;",
            f"look-ahead reference (no bound): the error rate of a forecast that sees the "
            f"future, each step predicted by the mean of the actual shares "
            f"{p['lookahead_radius']:,} steps on either side (itself left out); a longer "
            "average of the past can beat it where the shares hold still.",
        )),
        Paragraph("Aggregation: each figure is computed per (origin, layer) pair, averaged over "
                  "the layers of each origin, then over origins (the centre), with a 95% "
                  "interval of that mean over origins (Student's t, with a Newey-West variance "
                  "over origins whose horizons overlap). Two predictors are compared on the "
                  "same pairs: the mean paired difference and its interval, likewise; a "
                  "difference counts only when its interval excludes zero, and a cell needs 5 "
                  "origins and 10 pairs to name a best."),
        Paragraph(f"Parameters: predictors {', '.join(p['predictors'])}; horizons "
                  f"{', '.join(str(h) for h in p['horizons'])}; state labels {p['states']} "
                  f"(state window {p['state_window']:,} steps); window "
                  f"{p['window'] or 'default'}"
                  f"; bucket {p['bucket'] or 'default'}; order {p['order'] or 'auto'}; seed "
                  f"{p['seed']}; training trace {p['train_trace'] or 'none (history only)'}. "
                  f"Backtest time: {timings}."),
        Paragraph("Command:"),
        Code(p["command"]),
    ]
