"""``unimix affinity`` and ``unimix plot``.

``unimix affinity``: plot each stage's affinity row for one query pixel as a PNG.

One PNG with a column per stage and a row per model: pooling shows a fixed 3×3 box, depthwise
convs a kernel-sized band, attention a dense input-dependent map, ACmix a window of attention,
Container a mix of both. ``--per-head`` adds one row per head (up to 8). Meant for small inputs
(nano presets at 32 px, full presets at ≤ 96 px).

Command line: ``unimix affinity --model coatnet_nano --synthetic --query 16,16 --out a.png``.

``unimix plot RUN [--output FILE.png]``: a run's learning curves (:mod:`unimix.viz.run_plot`).
Heavy modules (torch, the backbones) are imported only by ``unimix affinity``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["load_image", "main_affinity", "main_plot"]

DEFAULT_MODEL = "coatnet_nano"


def _default_size(model: nn.Module, name: str) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 32 if name.endswith("nano") else 224, 0))[1]
    return min(int(size), 96)


def load_image(
    path: str | None, size: int, index: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Image as a normalised ``[3, size, size]`` tensor: a file, or SyntheticShapes test image
    ``index``."""
    import numpy as np
    import torch
    from PIL import Image

    from unimix.data import SyntheticShapes

    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--image: no such file {path!r}")
        try:
            pil = Image.open(path).convert("RGB")
        except OSError as err:
            raise ValueError(f"--image: cannot read {path!r} as an image ({err})") from None
        pil = pil.resize((size, size), Image.BICUBIC)
    else:
        pil = SyntheticShapes(split="test", num_samples=index + 1, image_size=size)[index][0]
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
        help="checkpoint dir / output dir / *.safetensors (unimix.checkpoint.load_backbone); "
        "overrides --model",
    )
    parser.add_argument(
        "--which", default="teacher", choices=["teacher", "student"],
        help="which network of a training checkpoint (default: teacher)",
    )  # fmt: skip
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
    import torch

    from unimix.backbones import create_backbone
    from unimix.checkpoint import load_backbone

    from .affinity import collect_stage_affinities
    from .render import IMAGENET_MEAN, IMAGENET_STD, render_affinity_grid

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
            model, meta = load_backbone(args.checkpoint, which=args.which)
            models = [(f"{meta['backbone']} ({args.which})", model)]
            mean, std = meta.get("mean", mean), meta.get("std", std)
            size = args.size or int(meta.get("image_size", 32))
        else:
            names = [n.strip() for n in args.model.split(",") if n.strip()]
            if not names:
                raise ValueError(f"--model: no preset named in {args.model!r}")
            models = [(name, create_backbone(name, num_classes=0)) for name in names]
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


def _plot_parser() -> argparse.ArgumentParser:
    from .run_plot import DEFAULT_OUTPUT, METRICS_FILE

    parser = argparse.ArgumentParser(
        prog="unimix plot",
        description=(
            "Draw a pretraining run's curves into one PNG: DINO loss, the teacher's per-sample "
            "entropy against the entropy of its batch mean (collapse: the two meet), learning "
            "rate, teacher momentum, teacher k-NN top-1 and throughput. A panel whose values "
            "the run did not log says so."
        ),
    )
    parser.add_argument(
        "run", metavar="RUN", help=f"the run's output folder (holds {METRICS_FILE})"
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE.png",
        help=f"where the PNG goes (default: RUN/{DEFAULT_OUTPUT})",
    )
    return parser


def main_plot(argv: Sequence[str] | None = None) -> int:
    """``unimix plot``: write the run's curves PNG; returns the exit code."""
    args = _plot_parser().parse_args(argv)
    from .run_plot import plot_run

    try:
        out = plot_run(args.run, args.output)
    except (ValueError, OSError) as err:  # no run / metrics file, unwritable or unknown format
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
