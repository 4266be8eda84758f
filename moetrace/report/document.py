"""The report's content as blocks, built from the report.json document alone.

Markdown and HTML both render these blocks, so the two read the same and every number in
them is one of report.json's.
"""

from __future__ import annotations

from moetrace.display import format_bytes
from moetrace.report.blocks import Block, Bullets, Code, Heading, Image, Paragraph, Table
from moetrace.report.paper import closest_model

_STATE_ORDER = {"stable": 0, "transient": 1, "all": 2}


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def _steps(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _spread(row: dict, metric: str) -> str:
    lo, hi = row.get(f"{metric}_p10"), row.get(f"{metric}_p90")
    return "" if lo is None or hi is None else f" ({pct(lo)}–{pct(hi)})"


def report_blocks(doc: dict) -> list[Block]:
    """Every section of the report, in reading order: the answer first."""
    name = doc["trace"]["path"].rstrip("/").split("/")[-1]
    return [
        Heading(1, f"moetrace report: {name}"),
        Paragraph(_summary(doc)),
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
    headers = ("horizon", "state", "best", "error rate: median (p10–p90)", "window error",
               "vs naive", "reference", "x reference", "tie with")
    rows = []
    for b in doc["bottom_line"]:
        gain = b["gain_over_naive"]
        vs_naive = "—" if gain is None else (f"{gain * 100:.0f}% better" if gain > 0.0005 else
                                            f"{-gain * 100:.0f}% worse" if gain < -0.0005 else
                                            "same")
        which = "look-ahead" if b["lookahead"] is not None and (
            b["noise_floor"] is None or b["lookahead"] >= b["noise_floor"]) else "floor"
        rows.append((f"{b['horizon']:,}", b["state"], b["best"],
                     f"{pct(b['error_rate_median'])} ({pct(b['error_rate_p10'])}–"
                     f"{pct(b['error_rate_p90'])})", pct(b["window_error"]), vs_naive,
                     f"{pct(b['reference'])} ({which})" if b["reference"] else "—",
                     "—" if b["times_reference"] is None else f"{b['times_reference']:.2f}x",
                     ", ".join(b["ties"]) or "none"))
    return headers, rows


def note_lines(doc: dict) -> list[str]:
    """One line per predictor worse than naive somewhere, or that fell back, and why; one
    per default the report shrank for a short trace."""
    lines = [f"note: {text}" for text in doc["parameters"].get("shrunk", [])]
    for n in doc["notes"]:
        parts = []
        if n["worse_than_naive"]:
            where = ", ".join(f"{w['times_naive']:.2f}x at {w['horizon']:,} steps "
                              f"({w['state']})" for w in n["worse_than_naive"])
            parts.append(f"more than 1.25x naive's error ({where}): {n['reason']}")
        if n["fallbacks"]:
            parts.append(f"fell back at {n['fallbacks']} of {n['fits']} origins: "
                         + "; ".join(n["fallback_reasons"]))
        lines.append(f"{n['predictor']}: " + "; ".join(parts))
    for item in doc["parameters"].get("skipped", []):
        lines.append(f"{item['predictor']} was not run: {item['reason']}")
    return lines


def _summary(doc: dict) -> str:
    parts = []
    for b in doc["bottom_line"]:
        if b["state"] == "all" and any(x["horizon"] == b["horizon"] and x["state"] == "stable"
                                       for x in doc["bottom_line"]):
            continue
        tie = f" (a tie with {', '.join(b['ties'])})" if b["ties"] else ""
        ref = f", {b['times_reference']:.2f}x what no forecaster can beat here" \
            if b["times_reference"] else ""
        parts.append(f"{b['horizon']:,} steps ahead, {b['state']} state: {b['best']}{tie}, "
                     f"error rate {pct(b['error_rate_median'])}{ref}")
    text = "; ".join(parts) + "." if parts else "No origin could be scored."
    return ("How well can each expert's load share be predicted ahead in this run? " + text +
            " Error rate: the per-step sum over experts of |forecast share - actual share| "
            "(fractions shown as percent), median over the backtest origins.")


def _bottom_line_section(doc: dict) -> list[Block]:
    headers, rows = bottom_line_rows(doc)
    notes = note_lines(doc)
    blocks: list[Block] = [
        Heading(2, "Bottom line"),
        Paragraph("Per horizon and state, the predictor with the lowest median error rate "
                  "across origins (p10–p90 in brackets). A tie: the best did not beat that "
                  "predictor at 80% of the origins, so the difference is inside the spread. "
                  "Window error: the error of the mean share over the horizon, what a "
                  "placement held for that long pays for. Reference: the higher of the "
                  "sampling noise floor and the look-ahead bound (a forecast that sees the "
                  "future); 1.00x would be as good as can be expected on this trace."),
        Table(headers, tuple(rows)),
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
                  "inside the interval (80% is calibrated). Expected against realised: mean "
                  "error rates, and their rank correlation across (origin, layer) pairs "
                  "(1: the forecast knew when it would be wrong)."),
        Table(("predictor", "horizon", "state", "coverage (target 80%)", "expected error",
               "realised error", "rank correlation"), tuple(table)),
    ]
    for fig in doc["figures"]:
        if fig["file"].startswith("figures/calibration"):
            blocks.append(Image(fig["file"], fig["caption"]))
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
              f"{r['replans']}", f"{r['replicas_moved']:,}", format_bytes(r["bytes_moved"]))
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
            "when the forecast says a new plan gains) and oracle (the actual mean over the "
            "interval: the bound for any plan held that long). Balanced: mean / max GPU tokens "
            "per layer and step (1 = perfect), its mean and 5th percentile; time: modeled MoE "
            "compute over a perfectly balanced step; moves: replicas placed on a GPU that did "
            "not hold them, and their bytes at "
            f"{placed['bytes_per_param']} bytes per parameter.")
    blocks: list[Block] = [
        Heading(2, "What would these forecasts have bought?"),
        Paragraph(text),
        Table(("policy", "state", "balanced", "p5", "time", "re-plans", "moves",
               "bytes moved"), tuple(table)),
    ]
    if gaps:
        blocks.append(Paragraph("Of the balancedness gap between window and oracle: "
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
                  key=lambda r: (r["horizon"], _STATE_ORDER[r["state"]],
                                 r["error_rate_median"] or 0))
    table = tuple(
        (r["predictor"], f"{r['horizon']:,}", r["state"],
         pct(r["error_rate_median"]) + _spread(r, "error_rate"), pct(r["error_rate"]),
         pct(r["window_error"]), pct(r["mean_error_ratio"]), pct(r["imbalance_error"]),
         str(r["origins"]), pct(r["noise_floor"]), pct(r["lookahead"]))
        for r in rows)
    blocks: list[Block] = [
        Heading(2, "Every predictor, horizon and state"),
        Paragraph("Error rate: the median across origins of the per-origin mean over the "
                  "layers in that state, with its p10–p90; mean: over every (origin, layer) "
                  "pair. Origins counts the origins behind a row. Noise floor and look-ahead "
                  "bound: the two references, averaged over the same pairs (docs/metrics.md)."),
        Table(("predictor", "horizon", "state", "error rate: median (p10–p90)", "mean",
               "window error", "mean error ratio", "imbalance error", "origins",
               "noise floor", "look-ahead bound"), table),
    ]
    for fig in doc["figures"]:
        if fig["file"].startswith("figures/error_vs_origin"):
            blocks.append(Image(fig["file"], fig["caption"]))
    return blocks


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
                  "moetrace's figures are from this trace, stable state, mean over layers; the "
                  "other setup's rows are shown for reference only."),
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
            f"look-ahead bound: the error rate of a forecast that sees the future, each step "
            f"predicted by the mean of the actual shares {p['lookahead_radius']:,} steps on "
            "either side (itself left out); real routing noise is overdispersed, so on real "
            "traces it is the higher, truer reference.",
        )),
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
