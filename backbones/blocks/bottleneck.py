"""ACmix-ResNet's block: a ResNet bottleneck whose 3×3 conv is the ACmix mixer.

Layout of timm's ``Bottleneck`` (``1×1 → 3×3 → 1×1``, ×4 expansion, BN + ReLU, a ``1×1 conv →
BN`` shortcut when the shape changes, last BN zero-initialised), with ACmix in place of the 3×3
conv. The official block (LeapLabTHU/ACmix ``ResNet/``) strides inside ACmix; ours keeps the
mixer stride-free so its affinity stays square and inspectable, and a stride-2 block downsamples
right after it with a 3×3/2 average pool (``count_include_pad=False``), which gives ``⌈H/2⌉``
like the strided 1×1 shortcut at every size, odd ones and 1×1 included. No parameters change.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from ..layers.shortcuts import conv_bn_shortcut
from ..mixers import ACmix
from .checks import require_no_dropout

__all__ = ["ACmixBottleneck"]


class ACmixBottleneck(nn.Module):
    """``[B, dim, H, W] → [B, dim_out, ⌈H/s⌉, ⌈W/s⌉]``: ``1×1 → ACmix → (pool) → 1×1`` + shortcut.

    Args:
        dim, dim_out: input and output channels; the bottleneck width is ``dim_out // 4``.
        stride: 1 or 2.
        drop_path: stochastic-depth rate of the branch.
        proj_drop: must be 0 (the block has no dropout).
        num_heads, window_size, kernel_size: ACmix settings.
    """

    expansion = 4

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        stride: int = 1,
        num_heads: int = 4,
        window_size: int = 7,
        kernel_size: int = 3,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        dim_out = dim_out or dim
        if stride not in (1, 2):
            raise ValueError(f"ACmixBottleneck stride: expected 1 or 2, got {stride!r}")
        require_no_dropout("ACmixBottleneck", proj_drop)
        if dim_out % self.expansion:
            raise ValueError(f"ACmixBottleneck dim_out={dim_out} is not divisible by 4")
        width = dim_out // self.expansion
        # built before the branch and registered after it: timm's make_blocks builds the
        # shortcut first, and the block lists it last (seeded inits and state-dict order match)
        shortcut = conv_bn_shortcut(dim, dim_out, stride) if stride != 1 or dim != dim_out else None

        self.conv1 = nn.Conv2d(dim, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU(inplace=True)
        self.mixer = ACmix(
            width, num_heads=num_heads, window_size=window_size, kernel_size=kernel_size
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.act2 = nn.ReLU(inplace=True)
        self.pool = (
            nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
            if stride == 2
            else nn.Identity()
        )
        self.conv3 = nn.Conv2d(width, dim_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(dim_out)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = shortcut
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        """Start the residual branch at zero (timm's ``zero_init_last``)."""
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.pool(self.act2(self.bn2(self.mixer(x))))
        x = self.bn3(self.conv3(x))
        return self.act3(self.drop_path(x) + shortcut)
