"""MBConv: the residual branch of CoAtNet's convolution block (inverted bottleneck with SE).

Papers: Dai et al., *CoAtNet: Marrying Convolution and Attention for All Data Sizes*, NeurIPS 2021
(https://arxiv.org/abs/2106.04803), after Sandler et al., *MobileNetV2* and Tan & Le,
*EfficientNet*. Layout and sizes follow timm's ``MbConvBlock`` for ``coatnet_0_224``
(``timm/models/maxxvit.py``): pre-norm (BatchNorm, no activation) → 1×1 expand (×4 of the
*output* width) → BN+GELU → depthwise 3×3 (carries the stride) → BN+GELU → SE (reduction to 1/4
of the output width, SiLU) → 1×1 project (with bias). The block around it (pre-norm, shortcut) is
:class:`~unimix.backbones.blocks.MBConvBlock`.

Token-mixer view: the only step that mixes positions is the depthwise conv, a per-channel
Toeplitz affinity over the expanded features. :meth:`MBConv.trace` shows exactly that
(``[B, C_mid, N_out, N_in]``; square when the stride is 1).
"""

from __future__ import annotations

import torch
from timm.layers import SEModule, get_norm_act_layer
from torch import nn

from ..layers.affinity import depthwise_affinity
from .base import MixerTrace, TokenMixer

__all__ = ["MBConv"]


class MBConv(TokenMixer):
    """The MBConv residual branch: ``[B, dim, H, W] → [B, dim_out, ceil(H/s), ceil(W/s)]``.

    Args:
        dim: input channels.
        dim_out: output channels (default ``dim``).
        stride: 1 or 2, applied by the depthwise conv (timm's ``stride_mode='dw'``).
        expand_ratio: hidden width = ``expand_ratio × dim_out`` (timm ``expand_output=True``).
        kernel_size: depthwise kernel (odd).
        se_ratio: SE bottleneck = ``int(se_ratio × dim_out)``; 0 disables SE.
        act_layer: activation after the expand and depthwise norms.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        stride: int = 1,
        expand_ratio: float = 4.0,
        kernel_size: int = 3,
        se_ratio: float = 0.25,
        act_layer: str | type[nn.Module] = "gelu",
    ) -> None:
        super().__init__()
        dim_out = dim_out or dim
        if stride not in (1, 2):
            raise ValueError(f"MBConv stride: expected 1 or 2, got {stride!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"MBConv kernel_size: expected an odd int >= 1, got {kernel_size!r}")
        if expand_ratio <= 0:
            raise ValueError(f"MBConv expand_ratio: expected > 0, got {expand_ratio!r}")
        mid = int(round(dim_out * expand_ratio))
        norm_act = get_norm_act_layer("batchnorm2d", act_layer)
        self.dim, self.dim_out, self.stride = dim, dim_out, stride

        self.expand = nn.Conv2d(dim, mid, 1, bias=False)
        self.norm1 = norm_act(mid)
        self.dw = nn.Conv2d(
            mid, mid, kernel_size, stride=stride, padding=kernel_size // 2, groups=mid, bias=False
        )
        self.norm2 = norm_act(mid)
        rd = int(se_ratio * dim_out)
        self.se = SEModule(mid, rd_channels=rd, act_layer=nn.SiLU) if rd > 0 else nn.Identity()
        self.project = nn.Conv2d(mid, dim_out, 1, bias=True)

    def _expanded(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(f"MBConv: expected input [B, {self.dim}, H, W], got {tuple(x.shape)}")
        return self.norm1(self.expand(x))

    def _tail(self, mixed: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.norm2(mixed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._tail(self.dw(self._expanded(x)))

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """Depthwise-conv affinity over the expanded features.

        ``affinity`` ``[B, C_mid, N_out, N_in]`` (the same Toeplitz band for every sample),
        ``values`` ``[B, C_mid, N_in, 1]`` (expanded, normalised features), ``aggregated`` the
        depthwise conv's output ``[B, C_mid, N_out, 1]``; ``output`` = ``forward(x)``.
        """
        values = self._expanded(x)
        mixed = self.dw(values)
        B, C, H, W = values.shape
        A = depthwise_affinity(self.dw.weight, H, W, self.stride, self.dw.padding[0])
        return MixerTrace(
            affinity=A.unsqueeze(0).expand(B, -1, -1, -1),
            values=values.flatten(2).unsqueeze(-1),
            aggregated=mixed.flatten(2).unsqueeze(-1),
            output=self._tail(mixed),
            note="affinity = depthwise conv on the expanded features; SE gate and 1x1 convs follow",
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, dim_out={self.dim_out}, stride={self.stride}"
