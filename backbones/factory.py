"""``create_dino_backbone``: a headless backbone by name, a unimix preset or any timm model."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

# The package, not its names: this module is imported while unimix.backbones initialises.
import unimix.backbones as backbones

__all__ = ["create_dino_backbone"]


def create_dino_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A headless backbone (``model(x)`` → ``[B, num_features]``): a unimix preset or any timm model.

    unimix presets are tried first (``create_backbone``, with or without the ``unimix_``
    prefix); any other name goes to ``timm.create_model(name, num_classes=0, pretrained=False)``,
    with ``dynamic_img_size=True`` for the models that take it (timm's ViTs and their kin; unless
    ``kwargs`` sets it): DINO's global and local crops, and a recipe's 32-px images, then run
    through a ``*_patch16_224`` model (its position table resampled to each input's grid, as
    the reference DINO's ViT does) instead of failing on "Input height (96) doesn't match
    model (224)". At the model's own size the features are unchanged.
    """
    bare = name.removeprefix("unimix_")
    if bare in backbones.list_backbones():
        return backbones.create_backbone(bare, num_classes=0, **kwargs)
    if not timm.is_model(name):
        raise ValueError(
            f"model.backbone: unknown backbone {name!r} (not a unimix preset nor a timm model)"
        )
    if "dynamic_img_size" not in kwargs:
        try:  # a model without the option refuses it in its constructor, before any weight
            return timm.create_model(
                name, num_classes=0, pretrained=False, dynamic_img_size=True, **kwargs
            )
        except TypeError as err:
            if "dynamic_img_size" not in str(err):
                raise
    return timm.create_model(name, num_classes=0, pretrained=False, **kwargs)
