"""Learning-curve panels shared by ``unimix plot`` and the benchmark plots: a matplotlib figure
(Agg backend, no display needed) of titled panels, each one or more series against a common
x axis, dotted reference lines, or the words "not logged" when there is nothing to draw."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["NOT_LOGGED", "Panel", "Series", "draw_panel", "panels_figure", "pyplot", "save_figure"]

#: What a panel says when none of its series has a point.
NOT_LOGGED = "not logged"


@dataclass
class Series:
    """One line: ``y[i]`` at ``x[i]`` (equal lengths), drawn with matplotlib format ``style``."""

    label: str
    x: list[float]
    y: list[float]
    style: str = "-"


@dataclass
class Panel:
    """One axes: a title, its series and dotted horizontal reference lines ``(label, y)``."""

    title: str
    series: list[Series]
    xlabel: str = "step"
    ylabel: str = ""
    hlines: list[tuple[str, float]] = field(default_factory=list)
    log_y: bool = False
    #: ``(first, last)`` of the x axis; None: matplotlib's choice (0-1 when only ``hlines``)
    xlim: tuple[float, float] | None = None

    @property
    def logged(self) -> bool:
        return any(s.x for s in self.series) or bool(self.hlines)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_panel(ax: Any, panel: Panel, legend_title: str | None = None) -> None:
    """Draw ``panel`` on the matplotlib axes ``ax`` ("not logged" when it has nothing)."""
    ax.set_title(panel.title, fontsize=10)
    if not panel.logged:
        ax.text(
            0.5, 0.5, NOT_LOGGED, ha="center", va="center", color="gray", transform=ax.transAxes
        )
        ax.set_xticks([])
        ax.set_yticks([])
        return
    for s in panel.series:
        if s.x:
            # a few points (a short run logs every N steps) would be an invisible line: mark them
            few = len(s.x) < 30 and not any(c in s.style for c in "o.sx^v*+")
            ax.plot(
                s.x, s.y, s.style, label=s.label, lw=1.2, ms=3, **({"marker": "o"} if few else {})
            )
    for i, (label, y) in enumerate(panel.hlines):  # labelled ones told apart by their dashes
        style = (":", "--", "-.")[i % 3] if label else ":"
        ax.axhline(y, ls=style, lw=1, color="gray", label=label or None)
    if panel.log_y and all(v > 0 for s in panel.series for v in s.y):
        ax.set_yscale("log")
    if panel.xlim is not None:
        first, last = panel.xlim
        pad = 0.02 * (last - first) or 0.5  # a one-step run still gets an axis around its step
        ax.set_xlim(first - pad, last + pad)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    ax.grid(alpha=0.3)
    if any(s.label for s in panel.series if s.x) or any(label for label, _ in panel.hlines):
        ax.legend(fontsize=7, title=legend_title, title_fontsize=7)


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (parent folders made), close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def panels_figure(panels: Sequence[Panel], columns: int, size: tuple[float, float]) -> Any:
    """A figure of ``panels`` in rows of ``columns`` (``size``: inches); unused cells hidden."""
    plt = pyplot()
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=size, constrained_layout=True, squeeze=False)
    cells = list(axes.flat)
    for ax, panel in zip(cells, panels, strict=False):
        draw_panel(ax, panel)
    for ax in cells[len(panels) :]:
        ax.set_visible(False)
    return fig
