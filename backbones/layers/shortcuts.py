"""Shortcuts of blocks that change resolution or width themselves (CoAtNet, ResNet)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PoolShortcut", "conv_bn_shortcut"]


class PoolShortcut(nn.Module):
    """2×2 average pool (``ceil_mode``, when ``stride == 2``) then a 1×1 conv if widths differ:
    ``[B, C_in, H, W] → [B, C_out, ⌈H/s⌉, ⌈W/s⌉]`` (timm's CoAtNet shortcut; ``ceil_mode`` so odd
    maps match the strided branch, identical to timm on even sizes)."""

    def __init__(self, dim: int, dim_out: int, stride: int = 2) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.expand = nn.Conv2d(dim, dim_out, 1, bias=True) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


def conv_bn_shortcut(dim: int, dim_out: int, stride: int) -> nn.Sequential:
    """``1×1 conv (stride, no bias) → BatchNorm``: timm's ResNet ``downsample_conv``."""
    return nn.Sequential(
        nn.Conv2d(dim, dim_out, 1, stride=stride, bias=False), nn.BatchNorm2d(dim_out)
    )
