"""SepConv: ConvFormer's inverted separable convolution token mixer.

Paper: Yu et al., *MetaFormer Baselines for Vision*, TPAMI 2023 (https://arxiv.org/abs/2210.13452);
layout as timm's ``metaformer.SepConv``: 1×1 expand (×2, no bias) → StarReLU → depthwise 7×7
(no bias) → 1×1 project (no bias), after MobileNetV2's inverted bottleneck.

Affinity: only the depthwise step mixes positions, so :meth:`SepConv.trace` shows it: one Toeplitz
band per *expanded* channel applied to the activated expanded features. In Container's
``Y = (A·V)·W`` the first 1×1 conv (+ StarReLU) plays the value projection ``V`` and the last the
output projection ``W``.
"""

from __future__ import annotations

import torch
from timm.models.metaformer import StarReLU
from torch import nn

from ..layers.affinity import depthwise_affinity
from .base import MixerTrace, TokenMixer

__all__ = ["SepConv"]


class SepConv(TokenMixer):
    """``[B, dim, H, W] → [B, dim, H, W]``; any input size ≥ 1×1.

    Args:
        dim: channels.
        expansion_ratio: hidden width ``int(expansion_ratio · dim)``.
        kernel_size: odd depthwise kernel side.
        act_layer: activation after the expansion (timm: StarReLU, 2 learnable scalars).
    """

    def __init__(
        self,
        dim: int,
        expansion_ratio: float = 2.0,
        kernel_size: int = 7,
        act_layer: type[nn.Module] = StarReLU,
    ) -> None:
        super().__init__()
        mid = int(expansion_ratio * dim)
        if mid < 1:
            raise ValueError(f"SepConv expansion_ratio: expected > 0, got {expansion_ratio!r}")
        self.dim, self.mid = dim, mid
        self.pwconv1 = nn.Conv2d(dim, mid, 1, bias=False)
        self.act = act_layer()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SepConv kernel_size: expected an odd int >= 1, got {kernel_size!r}")
        self.kernel_size = kernel_size
        # a plain conv, not a nested TokenMixer: one mixer per block for hooks and pictures
        self.dwconv = nn.Conv2d(
            mid, mid, kernel_size, padding=kernel_size // 2, groups=mid, bias=False
        )
        self.pwconv2 = nn.Conv2d(mid, dim, 1, bias=False)

    def _values(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(f"SepConv: expected input [B, {self.dim}, H, W], got {tuple(x.shape)}")
        return self.act(self.pwconv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pwconv2(self.dwconv(self._values(x)))

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """The depthwise step: ``affinity`` ``[B, mid, N, N]``, ``values`` the activated expanded
        channels ``[B, mid, N, 1]``, ``aggregated`` the depthwise output; ``output = forward(x)``."""
        values = self._values(x)
        mixed = self.dwconv(values)
        B, C, H, W = values.shape
        A = depthwise_affinity(self.dwconv.weight, H, W, padding=self.kernel_size // 2)
        return MixerTrace(
            affinity=A.unsqueeze(0).expand(B, -1, -1, -1),
            values=values.flatten(2).unsqueeze(-1),
            aggregated=mixed.flatten(2).unsqueeze(-1),
            output=self.pwconv2(mixed),
            note=(
                "affinity = depthwise conv on the expanded, activated channels; "
                "the 1x1 convs before and after are the V and W projections"
            ),
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, mid={self.mid}, kernel_size={self.kernel_size}"
