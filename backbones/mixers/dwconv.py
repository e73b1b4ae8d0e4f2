"""DepthwiseConv: a plain ``k × k`` depthwise convolution as a token mixer.

Affinity: one Toeplitz band per channel, ``A_c[i, j] = w_c[Δ(i, j)]`` for the kernel offset
``Δ(i, j)`` of input ``j`` seen from output ``i`` (zero outside the kernel and at the zero-padded
borders), built by :func:`~unimix.backbones.mbconv.depthwise_affinity`. The conv has no bias, so
the mixer is exactly ``A · V`` with ``V = x``; a per-channel bias would only add a constant the
block's next norm or projection absorbs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.affinity import depthwise_affinity
from .base import MixerTrace, TokenMixer

__all__ = ["DepthwiseConv"]


class DepthwiseConv(TokenMixer):
    """``[B, dim, H, W] → [B, dim, H, W]``: depthwise conv, stride 1, zero padding ``k // 2``.

    Args:
        dim: channels.
        kernel_size: odd kernel side (default 7, ConvFormer's).
    """

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"DepthwiseConv kernel_size: expected an odd int >= 1, got {kernel_size!r}"
            )
        self.dim, self.kernel_size = dim, kernel_size
        self.conv = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False
        )

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(
                f"DepthwiseConv: expected input [B, {self.dim}, H, W], got {tuple(x.shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.conv(x)

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """``affinity`` ``[B, C, N, N]`` (Toeplitz per channel, shared over the batch),
        ``values = x`` ``[B, C, N, 1]``, ``aggregated`` the conv output flattened likewise."""
        self._check(x)
        B, C, H, W = x.shape
        out = self.conv(x)
        A = depthwise_affinity(self.conv.weight, H, W, padding=self.kernel_size // 2)
        return MixerTrace(
            affinity=A.unsqueeze(0).expand(B, -1, -1, -1),
            values=x.flatten(2).unsqueeze(-1),
            aggregated=out.flatten(2).unsqueeze(-1),
            output=out,
            note=f"affinity = {self.kernel_size}x{self.kernel_size} depthwise conv, one band per channel",
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, kernel_size={self.kernel_size}"
