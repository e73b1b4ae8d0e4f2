"""Attention: multi-head self-attention over all positions, optionally with a relative-position bias.

Defaults follow timm's ``metaformer.Attention`` (CAFormer): heads of ``head_dim = 32`` channels,
no bias in the q/k/v and output projections, ``softmax(q kᵀ/√d) v`` by the fused kernel
(``F.scaled_dot_product_attention``). Written as 1×1 convs on ``[B, C, H, W]`` maps, which equals
timm's ``nn.Linear`` on the flattened tokens (same parameters).

``rel_pos=True`` adds CoAtNet's learned bias per head and 2-D offset inside the softmax
(:class:`~unimix.backbones.layers.RelPosBias`), read off (or resized) for each input's grid, so
one instance runs at any resolution. Affinity: ``softmax(q kᵀ/√d [+ bias])`` ``[B, heads, N, N]``,
rows sum to 1, values ``v``. :class:`RelPosAttention` is the general form (any ``dim_in``,
optional bias, biased projections) CoAtNet's transformer blocks use; :class:`Attention` is its
MetaFormer configuration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.rel_pos import RelPosBias
from .base import MixerTrace, TokenMixer

__all__ = ["Attention", "RelPosAttention"]


class RelPosAttention(TokenMixer):
    """Multi-head self-attention with a relative-position bias: ``[B, dim_in, H, W] → [B, dim, H, W]``.

    ``softmax(q kᵀ / √d + bias) v`` then a 1×1 output projection. ``dim_in`` lets the first block
    of a stage widen the channels inside the attention (timm's ``expand_first``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int | None = None,
        head_dim: int = 32,
        dim_in: int | None = None,
        rel_pos_base: int | None = 7,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        num_heads = num_heads or max(1, dim // head_dim)
        if dim % num_heads:
            raise ValueError(
                f"RelPosAttention: dim={dim} is not divisible by num_heads={num_heads}"
            )
        self.dim, self.dim_in = dim, dim_in or dim
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Conv2d(self.dim_in, 3 * dim, 1, bias=qkv_bias)
        self.rel_pos = RelPosBias(num_heads, rel_pos_base) if rel_pos_base else None
        self.proj = nn.Conv2d(dim, dim, 1)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.dim_in:
            raise ValueError(
                f"RelPosAttention: expected input [B, {self.dim_in}, H, W], got {tuple(x.shape)}"
            )
        B, _, H, W = x.shape
        qkv = self.qkv(x).view(B, 3, self.num_heads, self.head_dim, H * W).transpose(-1, -2)
        return qkv.unbind(1)  # each [B, heads, N, d]

    def _bias(self, H: int, W: int) -> torch.Tensor | None:
        return None if self.rel_pos is None else self.rel_pos(H, W).unsqueeze(0)

    def _output(self, aggregated: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B = aggregated.shape[0]
        return self.proj(aggregated.transpose(-1, -2).reshape(B, self.dim, H, W))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        q, k, v = self._qkv(x)
        attn_mask = self._bias(H, W)
        if attn_mask is not None:
            attn_mask = attn_mask.to(q.dtype)
        return self._output(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask), H, W)

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """``affinity = softmax(q kᵀ/√d + bias)`` ``[B, heads, N, N]``, ``values = v``."""
        H, W = x.shape[-2:]
        q, k, v = self._qkv(x)
        logits = (q * self.scale) @ k.transpose(-1, -2)
        bias = self._bias(H, W)
        affinity = (logits if bias is None else logits + bias).softmax(dim=-1)
        attn_mask = None if bias is None else bias.to(q.dtype)
        aggregated = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return MixerTrace(affinity, v, aggregated, self._output(aggregated, H, W))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, dim_in={self.dim_in}, num_heads={self.num_heads}"


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
