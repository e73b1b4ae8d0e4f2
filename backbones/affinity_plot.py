"""Affinity maps: where does one query position gather its context, stage by stage?

Every unimix token mixer can return its affinity ``A`` (``[B, G, N, N]``, see
:mod:`unimix.backbones.mixer_base`). This module runs a model on one image, catches the input
of the last mixer of each stage (and of each mixer type within a stage) with forward hooks,
asks that mixer for ``A``, takes the row of a chosen query pixel and draws it over the image:
one PNG with a column per stage and a row per model. Pooling shows a fixed 3×3 box,
depthwise convs a kernel-sized band, attention a dense input-dependent map, ACmix a window
of attention, Container a mix of both.

Reading a panel: the query's row of ``A`` on the key grid of that stage (nearest-neighbour
upsampled to the image), averaged over heads (or channels, for per-channel static mixers;
``|A|`` when ``A`` has signs, as learned conv kernels do), normalised to its own maximum.
``--per-head`` adds one row per head (up to 8). Building ``A`` costs ``G·N²`` floats per mixer:
meant for small inputs (nano presets at 32 px, full presets at ≤ 96 px).

Command line: ``unimix affinity --model coatnet_nano --synthetic --query 16,16 --out a.png``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .mixers import TokenMixer

__all__ = [
    "StageAffinity",
    "collect_stage_affinities",
    "main_affinity",
    "render_affinity_grid",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MODEL = "coatnet_nano"
MAX_AFFINITY_BYTES = 2 * 1024**3
MAX_HEAD_ROWS = 8


@dataclass
class StageAffinity:
    """One panel: the query's affinity row for one mixer.

    Attributes:
        stage: stage label (``"stage 1"``...), from the model's ``feature_info``.
        module: dotted name of the mixer inside the model.
        mixer: mixer class name.
        row: ``[G, Hk, Wk]`` the query's row of ``A`` for every group, on the key grid.
        query_cell: ``(row, col)`` of the query on the stage's query grid.
        query_grid: ``(Hq, Wq)`` size of the query grid (differs from the key grid when strided).
        note: the mixer's own note about what ``A`` leaves out.
    """

    stage: str
    module: str
    mixer: str
    row: torch.Tensor
    query_cell: tuple[int, int]
    query_grid: tuple[int, int]
    note: str = ""


# -- collecting ----------------------------------------------------------------------------------


def _stage_names(model: nn.Module) -> list[str]:
    """Module names of the stages, from timm's ``feature_info`` (stem excluded when possible)."""
    info = getattr(model, "feature_info", None) or []
    names = [d["module"] for d in info if isinstance(d, dict) and "module" in d]
    return [n for n in names if n.startswith(("stages", "layer"))] or names


def _stage_label(name: str, stage_names: list[str]) -> tuple[int, str]:
    for index, prefix in enumerate(stage_names):
        if name == prefix or name.startswith(prefix + "."):
            return index, f"stage {index + 1}"
    head = ".".join(name.split(".")[:2])
    return len(stage_names), head


def collect_stage_affinities(
    model: nn.Module, image: torch.Tensor, query: tuple[int, int]
) -> list[StageAffinity]:
    """Run ``model`` on ``image`` (``[3, H, W]``, normalised) and read each stage's affinity row.

    ``query`` is ``(row, col)`` in image pixels; each stage maps it to its own grid.
    """
    if image.ndim != 3:
        raise ValueError(f"image: expected [3, H, W], got {tuple(image.shape)}")
    H, W = image.shape[-2:]
    if not (0 <= query[0] < H and 0 <= query[1] < W):
        raise ValueError(f"--query: {query[0]},{query[1]} lies outside the {H}x{W} input image")
    mixers = [(n, m) for n, m in model.named_modules() if isinstance(m, TokenMixer)]
    if not mixers:
        raise ValueError(f"model {type(model).__name__} has no unimix TokenMixer to inspect")
    stage_names = _stage_names(model)
    # the last mixer of each (stage, mixer type), in network order
    chosen: dict[tuple[int, str], tuple[str, nn.Module]] = {}
    order: list[tuple[int, str]] = []
    for name, mixer in mixers:
        key = (_stage_label(name, stage_names)[0], type(mixer).__name__)
        if key not in chosen:
            order.append(key)
        chosen[key] = (name, mixer)

    inputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def save(_module: nn.Module, args: tuple, _output: torch.Tensor) -> None:
            inputs[name] = args[0].detach()

        return save

    handles = [mixer.register_forward_hook(hook(name)) for name, mixer in chosen.values()]
    try:
        with torch.no_grad():
            forward = getattr(model, "forward_features", model)
            forward(image.unsqueeze(0))
    finally:
        for handle in handles:
            handle.remove()

    panels = []
    for key in order:
        name, mixer = chosen[key]
        x = inputs[name]
        Hk, Wk = x.shape[-2:]
        n = Hk * Wk
        if 4 * x.shape[1] * n * n * 4 > MAX_AFFINITY_BYTES:
            raise ValueError(
                f"--size: {H}x{W} input gives a {Hk}x{Wk} map at {name}; its affinity would not "
                f"fit in memory, use a smaller --size (e.g. {max(16, H * 48 // max(Hk, Wk))})"
            )
        with torch.no_grad():
            trace = mixer.trace(x)
        A = trace.affinity[0]  # [G, Nq, Nk]
        Hq, Wq = trace.output.shape[-2:]  # queries live on the output grid (strided mixers)
        if Hq * Wq != A.shape[-2]:
            raise ValueError(f"{name}: affinity has {A.shape[-2]} rows for a {Hq}x{Wq} output")
        cell = (min(query[0] * Hq // H, Hq - 1), min(query[1] * Wq // W, Wq - 1))
        row = A[:, cell[0] * Wq + cell[1], :].reshape(-1, Hk, Wk)
        label = _stage_label(name, stage_names)[1]
        panels.append(
            StageAffinity(label, name, type(mixer).__name__, row, cell, (Hq, Wq), trace.note)
        )
    return panels


# -- drawing -------------------------------------------------------------------------------------


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


# Mixers whose groups are channels, not heads (the rest are labelled by head count).
_PER_CHANNEL_MIXERS = {"MBConv", "Pooling", "DWConv", "SepConv", "DepthwiseConv", "ContainerMixer"}


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
    """Draw one row of panels per model (``(model name, panels)``) and save a PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    picture = _display_image(image, mean, std)
    backdrop = 0.25 + 0.5 * picture.mean(-1, keepdims=True).repeat(3, -1)  # grey, under the heat
    cmap = plt.get_cmap("inferno")
    H, W = picture.shape[:2]
    n_cols = 1 + max(len(panels) for _, panels in rows)
    lines: list[tuple[str, StageAffinity | None, int | None]] = []
    for model_name, panels in rows:
        lines.append((model_name, None, None))
        if per_head:
            heads = min(MAX_HEAD_ROWS, max(p.row.shape[0] for p in panels))
            lines += [(model_name, None, h) for h in range(heads)]
    height = 2.9 * len(lines) + 1.0  # + room for the title and the colour bar
    fig, axes = plt.subplots(
        len(lines), n_cols, figsize=(2.7 * n_cols, height), squeeze=False, layout="constrained"
    )
    extent = (0, W, H, 0)  # pixel edges, so grids of every stage line up with the image
    panels_by_model = dict(rows)
    for r, (model_name, _, head) in enumerate(lines):
        panels = panels_by_model[model_name]
        ax0 = axes[r, 0]
        ax0.imshow(picture, extent=extent, interpolation="nearest")
        ax0.plot(query[1] + 0.5, query[0] + 0.5, marker="+", color="cyan", markersize=14, mew=2)
        if head is None:
            ax0.set_title(
                f"{model_name}\ninput {H}x{W}, query ({query[0]}, {query[1]})", fontsize=9
            )
        else:
            ax0.set_title(f"{model_name}\nhead {head}", fontsize=9)
        for c in range(1, n_cols):
            ax = axes[r, c]
            if c > len(panels):
                ax.axis("off")
                continue
            panel = panels[c - 1]
            Hk, Wk = panel.row.shape[-2:]
            if head is None:
                heat, signed = _heat(panel.row)
                how = f"mean{' |A|' if signed else ''} of {_group_word(panel)}"
            elif head < panel.row.shape[0]:
                heat, signed = _heat(panel.row[head : head + 1])
                how = f"head {head}{' |A|' if signed else ''}"
            else:
                ax.axis("off")
                continue
            ax.imshow(backdrop, extent=extent, interpolation="nearest")
            overlay = cmap(heat)
            overlay[..., 3] = 0.15 + 0.8 * np.sqrt(heat)  # faint where A is ~0, opaque at max
            ax.imshow(overlay, extent=extent, interpolation="nearest")
            Hq, Wq = panel.query_grid
            qy, qx = panel.query_cell
            ax.add_patch(
                Rectangle(
                    (qx * W / Wq, qy * H / Hq),
                    W / Wq,
                    H / Hq,
                    fill=False,
                    edgecolor="cyan",
                    linewidth=1.5,
                )
            )
            ax.set_title(f"{panel.stage} - {panel.mixer}\n{Hk}x{Wk} keys, {how}", fontsize=9)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        "Affinity row of the query (cyan) at each stage: where the mixer gathers context",
        fontsize=11,
    )
    bar = fig.colorbar(
        plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1)),
        ax=axes,
        location="bottom",
        shrink=0.3,
        aspect=40,
    )
    bar.set_label("share of the panel's largest weight", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


# -- inputs: models and images -------------------------------------------------------------------


def _create_model(name: str) -> nn.Module:
    try:
        from . import create_backbone  # type: ignore[attr-defined]
    except ImportError:  # registry not wired yet: go through timm directly
        import timm

        full = name if name.startswith("unimix_") else f"unimix_{name}"
        if full not in timm.list_models("unimix_*"):
            raise ValueError(f"--model: unknown preset {name!r}") from None
        return timm.create_model(full, num_classes=0)
    return create_backbone(name, num_classes=0)


def _default_size(model: nn.Module, name: str) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 32 if name.endswith("nano") else 224, 0))[1]
    return min(int(size), 96)


def _fallback_image(size: int) -> np.ndarray:
    """A generated test card: smooth colour background, a disc and a bar (uint8 ``[S, S, 3]``)."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    img = np.stack([0.25 + 0.5 * xx, 0.3 + 0.4 * yy, 0.6 - 0.3 * xx], axis=-1)
    disc = (xx - 0.35) ** 2 + (yy - 0.4) ** 2 < 0.06
    img[disc] = (0.95, 0.85, 0.2)
    bar = (np.abs(yy - 0.75) < 0.07) & (xx > 0.45) & (xx < 0.9)
    img[bar] = (0.1, 0.15, 0.5)
    return (img * 255).astype(np.uint8)


def load_image(
    path: str | None, size: int, index: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Image as a normalised ``[3, size, size]`` tensor: a file, a synthetic sample, or a test card."""
    from PIL import Image

    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--image: no such file {path!r}")
        try:
            pil = Image.open(path).convert("RGB")
        except OSError as err:
            raise ValueError(f"--image: cannot read {path!r} as an image ({err})") from None
        pil = pil.resize((size, size), Image.BICUBIC)
    else:
        try:
            from unimix.data import SyntheticShapes

            pil = SyntheticShapes(split="test", num_samples=index + 1, image_size=size)[index][0]
        except (ImportError, AttributeError, TypeError):
            pil = Image.fromarray(_fallback_image(size))
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def _parse_query(text: str | None) -> tuple[int, int] | None:
    """``"ROW,COL"`` → ``(row, col)``; ``None`` means the image centre."""
    if text is None:
        return None
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--query: expected ROW,COL in pixels, got {text!r}") from None
    return row, col


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimix affinity",
        description=(
            "Render, for each stage of a model, the affinity row of one query position as a heat "
            "map over the image (one PNG grid; one row per model)."
        ),
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"preset name, or several separated by commas (default {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--checkpoint",
        help="checkpoint dir / output dir / *.safetensors (unimix.eval.load_backbone); "
        "overrides --model",
    )
    parser.add_argument("--which", default="teacher", choices=["teacher", "student"])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--image", help="image file (resized to --size)")
    source.add_argument(
        "--synthetic", action="store_true", help="use a SyntheticShapes test image (default)"
    )
    parser.add_argument("--index", type=int, default=0, help="synthetic image index (default 0)")
    parser.add_argument("--size", type=int, help="input side in pixels (default: preset's, ≤ 96)")
    parser.add_argument("--query", help="ROW,COL of the query pixel in the input (default: centre)")
    parser.add_argument("--per-head", action="store_true", help="one extra row per head (≤ 8)")
    parser.add_argument("--seed", type=int, default=0, help="init seed for untrained presets")
    parser.add_argument("--out", default="affinity.png", help="output PNG (default affinity.png)")
    return parser


def main_affinity(argv: Sequence[str] | None = None) -> int:
    """``unimix affinity``: write the affinity PNG; returns the exit code."""
    args = _build_parser().parse_args(argv)
    try:
        if args.index < 0:
            raise ValueError(f"--index: expected >= 0, got {args.index}")
        if args.size is not None and args.size < 1:
            raise ValueError(f"--size: expected >= 1, got {args.size}")
        query = _parse_query(args.query)
        if args.image is not None and not Path(args.image).is_file():
            raise FileNotFoundError(f"--image: no such file {args.image!r}")
        torch.manual_seed(args.seed)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if args.checkpoint:
            from unimix.eval import load_backbone

            model, meta = load_backbone(args.checkpoint, which=args.which)
            models = [(f"{meta['backbone']} ({args.which})", model)]
            mean, std = meta.get("mean", mean), meta.get("std", std)
            size = args.size or int(meta.get("image_size", 32))
        else:
            names = [n.strip() for n in args.model.split(",") if n.strip()]
            if not names:
                raise ValueError(f"--model: no preset named in {args.model!r}")
            models = [(name, _create_model(name)) for name in names]
            size = args.size or _default_size(models[0][1], names[0])
        image = load_image(args.image, size, args.index, mean, std)
        query = query or (size // 2, size // 2)
        rows = []
        for label, model in models:
            model.eval()
            rows.append((label, collect_stage_affinities(model, image, query)))
        out = render_affinity_grid(
            rows, image, query, args.out, mean=mean, std=std, per_head=args.per_head
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
