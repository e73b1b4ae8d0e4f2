"""MetaFormer's block: ``norm → token mixer → residual → norm → MLP → residual``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from timm.layers import DropPath, LayerScale2d, Mlp
from timm.models.metaformer import LayerNorm2dNoBias, StarReLU
from torch import nn

from ..mixers import TokenMixer, mixer_class
from .checks import require_same_shape

__all__ = ["MetaFormerBlock"]


class MetaFormerBlock(nn.Module):
    """``x = rs1(x) + ls1(DropPath(mixer(norm1(x))))``; ``x = rs2(x) + ls2(DropPath(mlp(norm2(x))))``.

    ``ls``/``rs`` are per-channel scales (timm's ``LayerScale2d``) when their init value is set,
    identities otherwise. ``[B, dim, H, W] → [B, dim, H, W]``: the stage's downsampler changes
    width and resolution, so ``dim_out`` must equal ``dim`` and ``stride`` be 1.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        stride: int = 1,
        mixer: str | type[TokenMixer] = "pooling",
        mixer_kwargs: Mapping[str, Any] | None = None,
        mlp_ratio: float = 4.0,
        mlp_act: type[nn.Module] = StarReLU,
        mlp_bias: bool = False,
        norm_layer: type[nn.Module] = LayerNorm2dNoBias,
        layer_scale_init_value: float | None = None,
        res_scale_init_value: float | None = None,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        require_same_shape("MetaFormerBlock", dim, dim_out, stride)

        def scale(value: float | None) -> nn.Module:
            return nn.Identity() if value is None else LayerScale2d(dim, value)

        self.norm1 = norm_layer(dim)
        self.mixer = mixer_class(mixer)(dim, **dict(mixer_kwargs or {}))
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale1 = scale(layer_scale_init_value)
        self.res_scale1 = scale(res_scale_init_value)

        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(
            dim,
            int(mlp_ratio * dim),
            act_layer=mlp_act,
            bias=mlp_bias,
            drop=proj_drop,
            use_conv=True,
        )
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.layer_scale2 = scale(layer_scale_init_value)
        self.res_scale2 = scale(res_scale_init_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.res_scale1(x) + self.layer_scale1(self.drop_path1(self.mixer(self.norm1(x))))
        return self.res_scale2(x) + self.layer_scale2(self.drop_path2(self.mlp(self.norm2(x))))
