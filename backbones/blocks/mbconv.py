"""CoAtNet's convolution block: ``shortcut(x) + DropPath(MBConv(BatchNorm(x)))``."""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import DropPath
from torch import nn

from ..layers.shortcuts import PoolShortcut
from ..mixers import MBConv
from .checks import require_no_dropout

__all__ = ["MBConvBlock"]


class MBConvBlock(nn.Module):
    """``[B, dim, H, W] → [B, dim_out, ⌈H/s⌉, ⌈W/s⌉]``: one CoAtNet convolution block.

    Args:
        dim, dim_out, stride: as :class:`~unimix.backbones.mixers.MBConv`; the shortcut
            pools/projects to match (:class:`~unimix.backbones.layers.PoolShortcut`).
        drop_path: stochastic-depth rate of the branch.
        proj_drop: must be 0 (the block has no dropout).
        **mbconv_kwargs: forwarded to ``MBConv`` (``expand_ratio``, ``se_ratio``...).
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        stride: int = 1,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        **mbconv_kwargs: Any,
    ) -> None:
        super().__init__()
        require_no_dropout("MBConvBlock", proj_drop)
        dim_out = dim_out or dim
        self.shortcut = (
            PoolShortcut(dim, dim_out, stride) if stride != 1 or dim != dim_out else nn.Identity()
        )
        self.pre_norm = nn.BatchNorm2d(dim)
        self.mixer = MBConv(dim, dim_out, stride=stride, **mbconv_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.drop_path(self.mixer(self.pre_norm(x)))
