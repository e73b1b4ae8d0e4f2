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
    prefix); any other name goes to ``timm.create_model(name, num_classes=0, pretrained=False)``.
    """
    bare = name.removeprefix("unimix_")
    if bare in backbones.list_backbones():
        return backbones.create_backbone(bare, num_classes=0, **kwargs)
    if not timm.is_model(name):
        raise ValueError(
            f"model.backbone: unknown backbone {name!r} (not a unimix preset nor a timm model)"
        )
    return timm.create_model(name, num_classes=0, pretrained=False, **kwargs)
