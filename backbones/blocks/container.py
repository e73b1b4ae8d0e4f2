"""Container's block: a position residual, then the Container mixer and an MLP, BatchNorm pre-norms."""

from __future__ import annotations

import torch
from timm.layers import ConvMlp, DropPath
from torch import nn

from ..mixers import ContainerMixer
from .checks import require_same_shape

__all__ = ["ContainerBlock"]


class ContainerBlock(nn.Module):
    """``x + dwconv3×3(x)``, then ``x + DropPath(mixer(BN(x)))``, then ``x + DropPath(MLP(BN(x)))``.

    ``[B, dim, H, W] → [B, dim, H, W]`` (the official ``CBlock``/``MixBlock`` layout); the stage's
    patch merge changes width and resolution, so ``dim_out`` must equal ``dim`` and ``stride`` be 1.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int | None = None,
        stride: int = 1,
        mode: str = "affine",
        mlp_ratio: float = 4.0,
        head_dim: int = 32,
        kernel_size: int = 5,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        require_same_shape("ContainerBlock", dim, dim_out, stride)
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.mixer = ContainerMixer(dim, mode=mode, head_dim=head_dim, kernel_size=kernel_size)  # type: ignore[arg-type]
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path1(self.mixer(self.norm1(x)))
        return x + self.drop_path2(self.mlp(self.norm2(x)))
