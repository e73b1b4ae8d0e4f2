"""The evaluation transform: timm's ``create_transform`` of one data config
(:func:`eval_data_config`), which ``--format hf`` also writes into ``pretrained_cfg``, so a user
who loads an export with timm gets these exact tensors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["CROP_ABOVE", "CROP_PCT", "ArrayToPIL", "eval_data_config", "eval_transform"]

#: Above this size the eval transform resizes then centre-crops (the DINO / ImageNet protocol,
#: 224 <- 256); at or below it the image is resized to the size (a 32-px image has no border to
#: spare).
CROP_ABOVE = 64
CROP_PCT = 0.875


def eval_data_config(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> dict[str, Any]:
    """timm's data config of unimix's eval transform (``input_size``, ``interpolation``,
    ``mean``, ``std``, ``crop_pct``, ``crop_mode``): what ``--format hf`` writes into
    ``pretrained_cfg`` and :func:`eval_transform` is built from, so both always agree."""
    crop = image_size > CROP_ABOVE
    return {
        "input_size": (3, int(image_size), int(image_size)),
        "interpolation": "bilinear",
        "mean": tuple(float(v) for v in mean),
        "std": tuple(float(v) for v in std),
        "crop_pct": CROP_PCT if crop else 1.0,
        "crop_mode": "center" if crop else "squash",
    }


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any], torch.Tensor]:
    """PIL image (or ``[H, W, 3]`` uint8 array) → normalised float tensor
    ``[3, image_size, image_size]``: timm's ``create_transform`` of :func:`eval_data_config`.

    Above 64 px: bilinear resize of the shorter side to ``floor(image_size / 0.875)`` and a
    centre crop (224 ← 256, 96 ← 109); at 64 px and below a plain resize to ``image_size``.
    """
    from timm.data import create_transform

    # timm's own transform, not a copy of it: a hand-written copy once rounded 96 / 0.875 to
    # 110 where timm floors it to 109.
    transform = create_transform(**eval_data_config(image_size, mean, std), is_training=False)
    transform.transforms.insert(0, ArrayToPIL())
    return transform


class ArrayToPIL:
    """``[H, W, 3]`` uint8 array → PIL image; anything else unchanged (timm's eval transform
    resizes PIL images and tensors only)."""

    def __call__(self, image: Any) -> Any:
        from PIL import Image

        return Image.fromarray(image) if isinstance(image, np.ndarray) else image

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
