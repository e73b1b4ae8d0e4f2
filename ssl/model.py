"""Backbone + DINO head, with every crop of one resolution in one batched backbone pass."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .head import DINOHead

__all__ = ["DINOModel"]


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
