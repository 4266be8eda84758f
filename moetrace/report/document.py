"""The report's content as blocks, built from the report.json document alone.

Markdown and HTML both render these blocks, so the two read the same and every number in
them is one of report.json's.
"""

from __future__ import annotations

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
    """Every section of the report, in reading order."""
    name = doc["trace"]["path"].rstrip("/").split("/")[-1]
    return [
        Heading(1, f"moetrace report: {name}"),
        Paragraph(_summary(doc)),
        *_trace_section(doc),
        *_states_section(doc),
        *_headline_section(doc),
        *_layer_section(doc),
        *_paper_section(doc),
        *_method_section(doc),
    ]


def _rows(doc: dict, **keys) -> list[dict]:
    return [r for r in doc["results"] if all(r[k] == v for k, v in keys.items())]


def _best(doc: dict, horizon: int, state: str) -> dict | None:
    rows = _rows(doc, horizon=horizon, state=state, layer=None)
    return min(rows, key=lambda r: r["error_rate"]) if rows else None


def _summary(doc: dict) -> str:
    parts = []
    for h in doc["parameters"]["horizons"]:
        for state in ("stable", "all"):
            best = _best(doc, h, state)
            if best is not None:
                floor = f" (noise floor {pct(best['noise_floor'])})" if best["noise_floor"] else ""
                parts.append(f"{h:,} steps ahead, {state} state: {best['predictor']} is best with "
                             f"an error rate of {pct(best['error_rate'])}{floor} over "
                             f"{best['origins']} origins")
                break
    text = "; ".join(parts) + "." if parts else "No origin could be scored."
    return ("How well can each expert's load share be predicted ahead in this run? " + text +
            " Error rate: the mean per-step sum over experts of |forecast share - actual share| "
            "(fractions shown as percent).")


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
        ("steps", f"{t['first_step']:,} .. {t['last_step']:,} ({t['n_steps']:,} steps)"),
        ("missing steps (gaps)", gap_text),
        ("tokens per step (per layer, median)", f"{t['tokens_per_step']:,}"),
        ("source", t["source"] or "not stated"),
    ]
    return [Heading(2, "The trace"), Table(("", ""), tuple(rows))]


def _segments(layer: dict) -> str:
    return "; ".join(f"{s['state']} {s['start']:,}–{s['end']:,}" for s in layer["segments"])


def _states_section(doc: dict) -> list[Block]:
    s = doc["states"]
    model = s["model_stable_from"]
    verdict = (f"All layers are stable from step {model:,}." if model is not None
               else "Not every layer reaches the stable state by the last step.")
    rows = tuple(
        (str(layer["layer"]), _steps(layer["stable_from"]), _segments(layer),
         pct(layer["noise_floor"].get("transient")), pct(layer["noise_floor"].get("stable")))
        for layer in s["layers"])
    return [
        Heading(2, "States per layer"),
        Paragraph(f"{verdict} States come from moetrace analyze (window {s['window']} steps); "
                  "a backtest origin takes each layer's state at the origin step. Segments end "
                  "exclusive. Noise floor: the per-step error rate a perfect predictor of the "
                  "underlying shares would still have, from sampling noise alone."),
        Table(("layer", "stable from", "segments", "noise floor (transient)",
               "noise floor (stable)"), rows),
    ]


def _headline_section(doc: dict) -> list[Block]:
    rows = sorted(_rows(doc, layer=None),
                  key=lambda r: (r["horizon"], _STATE_ORDER[r["state"]], r["error_rate"]))
    table = tuple(
        (r["predictor"], f"{r['horizon']:,}", r["state"],
         pct(r["error_rate"]) + _spread(r, "error_rate"), pct(r["mean_error_ratio"]),
         pct(r["window_error"]), pct(r["imbalance_error"]), str(r["origins"]),
         pct(r["noise_floor"]))
        for r in rows)
    blocks: list[Block] = [
        Heading(2, "Headline: error by predictor, horizon and state"),
        Paragraph("Means over layers and origins; in brackets p10–p90 across origins. A row for "
                  "a state averages the (origin, layer) pairs in which the layer was in that state "
                  "at the origin; origins counts the origins behind it. Noise floor: the same "
                  "average of each layer's per-step floor in that state."),
        Table(("predictor", "horizon", "state", "error rate (p10–p90)", "mean error ratio",
               "window error", "imbalance error", "origins", "noise floor"), table),
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
        if not fig["file"].startswith("figures/error_vs_origin"):
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


def _times(value: float | None, floor: float | None) -> str:
    return "—" if value is None or not floor else f"{value / floor:.2f}x"


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
            "noise floor: per-step error rate that sampling noise alone gives (moetrace analyze).",
        )),
        Paragraph(f"Parameters: predictors {', '.join(p['predictors'])}; horizons "
                  f"{', '.join(str(h) for h in p['horizons'])}; window {p['window'] or 'default'}"
                  f"; bucket {p['bucket'] or 'default'}; order {p['order'] or 'auto'}; seed "
                  f"{p['seed']}; training trace {p['train_trace'] or 'none (history only)'}. "
                  f"Backtest time: {timings}."),
        Paragraph("Command:"),
        Code(p["command"]),
    ]
