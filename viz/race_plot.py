"""The curves of a benchmark race (``scripts/bench_cifar.py``): k-NN top-1 @20 of each run's
teacher against source images seen, with the floors (raw pixels, untrained) as dotted lines,
drawn with the panels of :mod:`unimix.viz.curves` (moved here from ``unimix.bench``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .curves import Panel, Series, draw_panel, pyplot, save_figure

__all__ = ["plot_race", "race_panel"]


def race_panel(report: dict[str, Any]) -> Panel:
    """One panel: a series per (method, seed) run and a dotted line per like-for-like floor."""
    from ..eval import is_like_for_like

    series = [
        Series(
            f"{method} s{run['seed']}",
            [p["images_seen"] for p in run["curve"]],
            [p["teacher@20"] for p in run["curve"]],
            "o-",
        )
        for method, summary in report["methods"].items()
        for run in summary["runs"]
    ]
    floors = [
        ("", row["top1@20"])
        for rows in report["floors"].values()
        for row in rows
        if is_like_for_like(row)
    ]
    return Panel(
        "", series, xlabel="source images seen", ylabel="k-NN top-1 @20 (%)", hlines=floors
    )


def plot_race(report: dict[str, Any], path: str | Path) -> Path:
    """Draw ``report`` (from :func:`unimix.bench.race.race`) into the image file ``path``."""
    fig, ax = pyplot().subplots(figsize=(6, 4), constrained_layout=True)
    draw_panel(ax, race_panel(report), legend_title="dotted: floors")
    return save_figure(fig, path, dpi=120)
