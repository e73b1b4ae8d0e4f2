"""Attention: multi-head self-attention over all positions, optionally with a relative-position bias.

Defaults follow timm's ``metaformer.Attention`` (CAFormer): heads of ``head_dim = 32`` channels,
no bias in the q/k/v and output projections, ``softmax(q kᵀ/√d) v`` by the fused kernel
(``F.scaled_dot_product_attention``). Written as 1×1 convs on ``[B, C, H, W]`` maps, which equals
timm's ``nn.Linear`` on the flattened tokens (same parameters).

``rel_pos=True`` adds CoAtNet's learned bias per head and 2-D offset inside the softmax
(:class:`~unimix.backbones.coatnet.RelPosBias`): its table covers a ``rel_pos_base`` grid and is
read off (or resized) for each input's grid, so one instance runs at any resolution (DINO's two
crop sizes). Without it the mixer has no notion of position (the stem and convs before it do).

Affinity: ``softmax(q kᵀ/√d [+ bias])`` ``[B, heads, N, N]``, rows sum to 1, values ``v``.
"""

from __future__ import annotations

from torch import nn

from .coatnet import RelPosAttention

__all__ = ["Attention"]


class Attention(RelPosAttention):
    """``[B, dim, H, W] → [B, dim, H, W]`` multi-head self-attention (any input size ≥ 1×1).

    Args:
        dim: channels; divisible by the number of heads.
        head_dim: channels per head (heads = ``dim // head_dim``, at least 1) unless ``num_heads``.
        num_heads: explicit head count.
        qkv_bias, proj_bias: biases of the projections (timm's MetaFormer: none).
        rel_pos: add a learned relative-position bias inside the softmax.
        rel_pos_base: side of the grid the bias table covers exactly (e.g. the stage's map size at
            the training resolution); larger grids get a bicubically resized table.
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 32,
        num_heads: int | None = None,
        qkv_bias: bool = False,
        proj_bias: bool = False,
        rel_pos: bool = False,
        rel_pos_base: int = 7,
    ) -> None:
        super().__init__(
            dim,
            num_heads=num_heads,
            head_dim=head_dim,
            rel_pos_base=rel_pos_base if rel_pos else None,
            qkv_bias=qkv_bias,
        )
        if not proj_bias:
            self.proj = nn.Conv2d(dim, dim, 1, bias=False)
