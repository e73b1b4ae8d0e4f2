"""Drawing affinity rows: one PNG with a column per stage and a row per model (or per head).

Reading a panel: the query's row of ``A`` on the key grid of that stage (nearest-neighbour
upsampled to the image), averaged over heads (or channels, for per-channel static mixers;
``|A|`` when ``A`` has signs, as learned conv kernels do), normalised to its own maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .affinity import StageAffinity

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MAX_HEAD_ROWS", "render_affinity_grid"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAX_HEAD_ROWS = 8

# Mixers whose groups are channels, not heads (the rest are labelled by head count).
_PER_CHANNEL_MIXERS = {"MBConv", "Pooling", "DWConv", "SepConv", "DepthwiseConv", "ContainerMixer"}


def _display_image(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    pixels = image * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return pixels.clamp(0, 1).permute(1, 2, 0).numpy()


def _heat(row: torch.Tensor) -> tuple[np.ndarray, bool]:
    """Mean over groups, ``|A|`` if signed, scaled to [0, 1]. Returns (map, was_signed)."""
    signed = bool((row < -1e-8 * row.abs().max().clamp_min(1e-30)).any())
    heat = (row.abs() if signed else row).mean(0)
    return (heat / heat.max().clamp_min(1e-12)).numpy(), signed


def _group_word(panel: StageAffinity) -> str:
    groups = panel.row.shape[0]
    kind = "heads" if panel.mixer not in _PER_CHANNEL_MIXERS and groups <= 32 else "channels"
    return f"{groups} {kind}" if groups > 1 else "1 group"


def _figure_rows(
    rows: Sequence[tuple[str, list[StageAffinity]]], per_head: bool
) -> list[tuple[str, int | None]]:
    """``(model name, head or None for the mean)`` of every row of the figure."""
    lines: list[tuple[str, int | None]] = []
    for model_name, panels in rows:
        lines.append((model_name, None))
        if per_head:
            heads = min(MAX_HEAD_ROWS, max(p.row.shape[0] for p in panels))
            lines += [(model_name, h) for h in range(heads)]
    return lines


def _draw_input(ax: Any, picture: np.ndarray, query: tuple[int, int], title: str) -> None:
    H, W = picture.shape[:2]
    ax.imshow(picture, extent=(0, W, H, 0), interpolation="nearest")
    ax.plot(query[1] + 0.5, query[0] + 0.5, marker="+", color="cyan", markersize=14, mew=2)
    ax.set_title(title, fontsize=9)


def _draw_panel(
    ax: Any, panel: StageAffinity, head: int | None, backdrop: np.ndarray, cmap: Any
) -> None:
    """One stage's heat map over the grey image, the query's cell framed in cyan."""
    from matplotlib.patches import Rectangle

    H, W = backdrop.shape[:2]
    extent = (0, W, H, 0)  # pixel edges, so grids of every stage line up with the image
    Hk, Wk = panel.row.shape[-2:]
    if head is None:
        heat, signed = _heat(panel.row)
        how = f"mean{' |A|' if signed else ''} of {_group_word(panel)}"
    elif head < panel.row.shape[0]:
        heat, signed = _heat(panel.row[head : head + 1])
        how = f"head {head}{' |A|' if signed else ''}"
    else:
        ax.axis("off")
        return
    ax.imshow(backdrop, extent=extent, interpolation="nearest")
    overlay = cmap(heat)
    overlay[..., 3] = 0.15 + 0.8 * np.sqrt(heat)  # faint where A is ~0, opaque at max
    ax.imshow(overlay, extent=extent, interpolation="nearest")
    Hq, Wq = panel.query_grid
    qy, qx = panel.query_cell
    cell = Rectangle(
        (qx * W / Wq, qy * H / Hq), W / Wq, H / Hq, fill=False, edgecolor="cyan", linewidth=1.5
    )
    ax.add_patch(cell)
    ax.set_title(f"{panel.stage} - {panel.mixer}\n{Hk}x{Wk} keys, {how}", fontsize=9)


def _add_colour_bar(fig: Any, axes: Any, cmap: Any) -> None:
    import matplotlib.pyplot as plt

    bar = fig.colorbar(
        plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1)),
        ax=axes,
        location="bottom",
        shrink=0.3,
        aspect=40,
    )
    bar.set_label("share of the panel's largest weight", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def render_affinity_grid(
    rows: Sequence[tuple[str, list[StageAffinity]]],
    image: torch.Tensor,
    query: tuple[int, int],
    out: str | Path,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    per_head: bool = False,
    dpi: int = 130,
) -> Path:
    """Draw one row of panels per model (``(model name, panels)``) and save a PNG at ``out``.

    ``image``: the normalised ``[3, H, W]`` input; ``query``: ``(row, col)`` in its pixels.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    picture = _display_image(image, mean, std)
    backdrop = 0.25 + 0.5 * picture.mean(-1, keepdims=True).repeat(3, -1)  # grey, under the heat
    cmap = plt.get_cmap("inferno")
    H, W = picture.shape[:2]
    n_cols = 1 + max(len(panels) for _, panels in rows)
    lines = _figure_rows(rows, per_head)
    height = 2.9 * len(lines) + 1.0  # + room for the title and the colour bar
    fig, axes = plt.subplots(
        len(lines), n_cols, figsize=(2.7 * n_cols, height), squeeze=False, layout="constrained"
    )
    panels_by_model = dict(rows)
    for r, (model_name, head) in enumerate(lines):
        panels = panels_by_model[model_name]
        if head is None:
            title = f"{model_name}\ninput {H}x{W}, query ({query[0]}, {query[1]})"
        else:
            title = f"{model_name}\nhead {head}"
        _draw_input(axes[r, 0], picture, query, title)
        for c in range(1, n_cols):
            if c > len(panels):
                axes[r, c].axis("off")
            else:
                _draw_panel(axes[r, c], panels[c - 1], head, backdrop, cmap)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        "Affinity row of the query (cyan) at each stage: where the mixer gathers context",
        fontsize=11,
    )
    _add_colour_bar(fig, axes, cmap)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
