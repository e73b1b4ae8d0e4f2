"""CoAtNet's transformer block (NCHW, pre-norm), timm's ``TransformerBlock2d`` layout."""

from __future__ import annotations

import torch
from timm.layers import ConvMlp, DropPath, LayerNorm2d
from torch import nn

from ..layers.shortcuts import PoolShortcut
from ..mixers import RelPosAttention
from .checks import require_no_dropout

__all__ = ["TransformerBlock"]


class TransformerBlock(nn.Module):
    """CoAtNet transformer block (NCHW, pre-norm), timm's ``TransformerBlock2d`` layout.

    ``x = shortcut(x) + DropPath(attn(pool(norm1(x))))``, then ``x + DropPath(mlp(norm2(x)))``.
    In a downsampling block the shortcut is a 2×2 average pool + 1×1 conv and the attention
    reads the pooled, normalised ``dim``-channel map and writes ``dim_out`` channels.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        stride: int = 1,
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
        rel_pos_base: int | None = 7,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        require_no_dropout("TransformerBlock", proj_drop)
        dim_out = dim_out or dim
        if stride not in (1, 2):
            raise ValueError(f"TransformerBlock stride: expected 1 or 2, got {stride!r}")
        changes = stride != 1 or dim != dim_out
        self.shortcut = PoolShortcut(dim, dim_out, stride) if changes else nn.Identity()
        self.norm1 = LayerNorm2d(dim, eps=1e-6)
        self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True) if stride == 2 else nn.Identity()
        self.mixer = RelPosAttention(
            dim_out, head_dim=head_dim, dim_in=dim, rel_pos_base=rel_pos_base
        )
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = LayerNorm2d(dim_out, eps=1e-6)
        self.mlp = ConvMlp(dim_out, int(dim_out * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shortcut(x) + self.drop_path1(self.mixer(self.pool(self.norm1(x))))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
