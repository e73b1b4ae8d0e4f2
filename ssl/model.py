"""Backbone + DINO head, with every crop of one resolution in one batched backbone pass."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .head import DINOHead

__all__ = ["DINOModel", "create_dino_backbone"]


def create_dino_backbone(name: str, **kwargs: Any) -> nn.Module:
    """A headless backbone (``model(x)`` → ``[B, num_features]``): a unimix preset or any timm model.

    unimix presets are tried first (``create_backbone``, with or without the ``unimix_``
    prefix); any other name goes to ``timm.create_model(name, num_classes=0, pretrained=False)``.
    """
    import timm

    try:
        from unimix.backbones import create_backbone, list_backbones
    except ImportError:  # backbones package without its API yet
        create_backbone, list_backbones = None, None
    bare = name.removeprefix("unimix_")
    if create_backbone is not None and list_backbones is not None and bare in list_backbones():
        return create_backbone(bare, num_classes=0, **kwargs)
    if not timm.is_model(name):
        raise ValueError(
            f"model.backbone: unknown backbone {name!r} (not a unimix preset nor a timm model)"
        )
    return timm.create_model(name, num_classes=0, pretrained=False, **kwargs)


class DINOModel(nn.Module):
    """``backbone`` then ``head`` over multi-crop inputs (the reference's MultiCropWrapper).

    ``forward(crops)`` takes a list of tensors, one per resolution, each ``[V_r·B, 3, S_r, S_r]``
    (view-major), runs the backbone once per resolution and the head once on all features, and
    returns ``[V, B, out_dim]`` with ``V = Σ V_r`` views in input order.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, crops: Sequence[torch.Tensor], batch: int, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``[V, B, out_dim]`` head outputs; with ``return_features`` also the backbone's
        ``[V·B, D]`` features (view-major), which the KoLeo regulariser reads."""
        features = torch.cat([self.backbone(x) for x in crops])  # [V·B, D]
        out = self.head(features).view(-1, batch, self.head.last_layer.out_features)
        return (out, features) if return_features else out
