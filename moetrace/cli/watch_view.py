"""`moetrace watch`'s live view: a pure function from a watch snapshot
(moetrace.watch.WatchState.snapshot) to a rich renderable (rich's Live redraws it; the state
update knows nothing of the screen), and the plain line printed instead when the output is
not a terminal."""

from __future__ import annotations

from typing import Any


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def render(snapshot: dict[str, Any], title: str):
    from rich import box
    from rich.table import Table

    step = snapshot["step"]
    table = Table(title=f"{title}: step {'-' if step is None else f'{step:,}'}",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  caption=_caption(snapshot), caption_justify="left")
    columns = ["layer", "state", "since", "max/mean", "expected error", "interval width"]
    if snapshot["plan_version"] is not None:
        columns += ["plan balance", "fresh plan"]
    for column in columns:
        table.add_column(column, justify="left" if column == "state" else "right",
                         no_wrap=True)
    for layer in snapshot["layers"]:
        row = [str(layer["layer"]), layer["state"] or "-",
               "-" if layer["since"] is None else f"{layer['since']:,}",
               "-" if layer["imbalance"] is None else f"{layer['imbalance']:.2f}",
               _pct(layer["expected_error"], 2), _pct(layer["interval_width"], 2)]
        if snapshot["plan_version"] is not None:
            row += [_pct(layer["plan_balancedness"]), _pct(layer["fresh_balancedness"])]
        table.add_row(*row)
    return table


def _caption(snapshot: dict[str, Any]) -> str:
    parts = [f"{snapshot['steps_seen']:,} steps seen"]
    if snapshot["forecast_at"] is not None:
        parts.append(f"forecast at step {snapshot['forecast_at']:,}")
    if snapshot["plan_version"] is not None:
        replan = snapshot["last_replan"]
        parts.append(f"plan v{snapshot['plan_version']}" +
                     ("" if replan is None else f" (re-planned at step {replan:,}, "
                                                f"{snapshot['replicas_moved']:,} replicas "
                                                "moved in all)"))
    return "; ".join(parts)


def line(snapshot: dict[str, Any]) -> str:
    """One plain line per update: the step, how many layers are stable, the plan version."""
    states = [layer["state"] for layer in snapshot["layers"]]
    stable = sum(s == "stable" for s in states)
    text = f"step {snapshot['step']:,}: {stable}/{len(states)} layers stable"
    worst = max((layer["imbalance"] or 0 for layer in snapshot["layers"]), default=0)
    text += f", worst max/mean {worst:.2f}"
    if snapshot["plan_version"] is not None:
        text += f", plan v{snapshot['plan_version']}"
    return text
