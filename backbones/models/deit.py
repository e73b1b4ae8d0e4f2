"""DeiT baselines: timm's ``VisionTransformer``, made resolution-agnostic.

``dynamic_img_size=True`` resamples the position table to each input's patch grid, so DINO's
224/96 or 32/16 crops run through one instance; ``dynamic_img_pad=True`` pads sides the patch
does not divide. These are the only presets not built by the shared skeleton: timm's ViT is the
reference they stand for.
"""

from __future__ import annotations

from typing import Any

import timm
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..preset import register_preset

__all__ = ["deit_nano", "deit_small"]


#: timm's ViT names its patch embedding and head so; ``features_only`` defaults to its last 3 blocks
_VIT = dict(first_conv="patch_embed.proj", classifier="head", out_indices=3)


def _vit_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(kwargs)
    kwargs.setdefault("dynamic_img_size", True)
    kwargs.setdefault("dynamic_img_pad", True)
    return kwargs


@register_preset(
    "attention",
    anchor_params_m=22.05,
    anchor_gmacs=4.24,
    anchor_source="timm deit_small_patch16_224",
    **_VIT,
)
def deit_small(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """timm's ``deit_small_patch16_224`` (22.05 M params; patch 16, dim 384, depth 12, 6 heads),
    any input size (position embeddings resampled per input)."""
    return timm.create_model("deit_small_patch16_224", pretrained=False, **_vit_kwargs(kwargs))


@register_preset("attention", image_size=32, **_VIT)
def deit_nano(pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """CPU-sized DeiT for 32-px images: patch 4 (8×8 tokens at 32 px, 4×4 at 16 px), dim 192,
    depth 5, 3 heads, MLP ratio 4; any input size."""
    args = dict(img_size=32, patch_size=4, embed_dim=192, depth=5, num_heads=3, mlp_ratio=4.0)
    args.update(_vit_kwargs(kwargs))
    return VisionTransformer(**args)
