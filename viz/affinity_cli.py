"""``unimix affinity``: each stage's affinity row for one query pixel, as one PNG with a column
per stage and a row per model (``--per-head``: one more row per head, up to 8). Meant for small
inputs (nano presets at 32 px, full presets at ≤ 96 px), e.g.
``unimix affinity --model coatnet_nano --synthetic --query 16,16 --out a.png``.
torch and the backbones are imported once the arguments are parsed."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["main"]

DEFAULT_MODEL = "coatnet_nano"


def _default_size(model: nn.Module, name: str) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size", (3, 32 if name.endswith("nano") else 224, 0))[1]
    return min(int(size), 96)


def _parse_query(text: str | None) -> tuple[int, int] | None:
    """``"ROW,COL"`` → ``(row, col)``; ``None`` means the image centre."""
    if text is None:
        return None
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--query: expected ROW,COL in pixels, got {text!r}") from None
    return row, col


def build_parser() -> argparse.ArgumentParser:
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
        "--which",
        default="teacher",
        choices=["teacher", "student"],
        help="which network of a training checkpoint (default: teacher)",
    )
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


def _check(args: argparse.Namespace) -> tuple[int, int] | None:
    """Refuse bad values before any model is built; returns the parsed ``--query``."""
    if args.index < 0:
        raise ValueError(f"--index: expected >= 0, got {args.index}")
    if args.size is not None and args.size < 1:
        raise ValueError(f"--size: expected >= 1, got {args.size}")
    query = _parse_query(args.query)
    if args.image is not None and not Path(args.image).is_file():
        raise FileNotFoundError(f"--image: no such file {args.image!r}")
    return query


def _models(args: argparse.Namespace, mean: Any, std: Any) -> tuple[list, Any, Any, int]:
    """``(labelled models, mean, std, input size)``: the checkpoint's network, or the presets
    ``--model`` names, initialised with ``--seed``."""
    import torch

    from ..backbones import create_backbone
    from ..checkpoint import load_backbone

    torch.manual_seed(args.seed)
    if args.checkpoint:
        model, meta = load_backbone(args.checkpoint, which=args.which)
        mean, std = meta.get("mean", mean), meta.get("std", std)
        size = args.size or int(meta.get("image_size", 32))
        return [(f"{meta['backbone']} ({args.which})", model)], mean, std, size
    names = [n.strip() for n in args.model.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--model: no preset named in {args.model!r}")
    models = [(name, create_backbone(name, num_classes=0)) for name in names]
    return models, mean, std, args.size or _default_size(models[0][1], names[0])


def main(argv: Sequence[str] | None = None) -> int:
    """``unimix affinity``: write the affinity PNG; returns the exit code."""
    args = build_parser().parse_args(argv)
    from .affinity import collect_stage_affinities
    from .inputs import load_image
    from .render import IMAGENET_MEAN, IMAGENET_STD, render_affinity_grid

    try:
        query = _check(args)
        models, mean, std, size = _models(args, IMAGENET_MEAN, IMAGENET_STD)
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
