"""Pooling: PoolFormer's parameter-free token mixer.

Paper: Yu et al., *MetaFormer Is Actually What You Need for Vision*, CVPR 2022
(https://arxiv.org/abs/2111.11418); layout as timm's ``metaformer.Pooling``: a ``k × k`` average
pool, stride 1, zero padding ``k // 2`` that is **not** counted (``count_include_pad=False``, so a
border position averages only the real pixels of its window), minus the input (the block adds the
input back, so the identity is not counted twice).

Affinity: ``A = P − I`` with ``P[i, j] = 1 / |window(i) ∩ image|`` for ``j`` in ``i``'s window
(rows of ``P`` sum to 1, border rows renormalised), the same matrix for every channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import MixerTrace, TokenMixer

__all__ = ["Pooling", "pooling_affinity"]


def pooling_affinity(
    height: int, width: int, pool_size: int = 3, device=None, dtype=None
) -> torch.Tensor:
    """``P − I`` ``[N, N]`` of a stride-1 average pool that ignores its padding.

    Column ``j`` is the pool's response to a unit impulse at position ``j``; the pool is linear,
    so ``A @ x.flatten()`` equals ``avg_pool(x) − x`` exactly.
    """
    n = height * width
    impulses = torch.eye(n, device=device, dtype=dtype).view(n, 1, height, width)
    pooled = F.avg_pool2d(
        impulses, pool_size, stride=1, padding=pool_size // 2, count_include_pad=False
    )  # [N_in, 1, H, W]
    return pooled.flatten(1).T - torch.eye(n, device=device, dtype=dtype)


class Pooling(TokenMixer):
    """``avg_pool_k×k(x) − x``: ``[B, C, H, W] → [B, C, H, W]``, no parameters, any size ≥ 1×1.

    Args:
        dim: channels (unused; kept so every mixer is built as ``Mixer(dim, **kwargs)``).
        pool_size: odd window side (PoolFormer: 3).
    """

    def __init__(self, dim: int, pool_size: int = 3) -> None:
        super().__init__()
        if not isinstance(pool_size, int) or pool_size < 1 or pool_size % 2 == 0:
            raise ValueError(f"Pooling pool_size: expected an odd int >= 1, got {pool_size!r}")
        self.dim, self.pool_size = dim, pool_size
        self.pool = nn.AvgPool2d(
            pool_size, stride=1, padding=pool_size // 2, count_include_pad=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """``affinity = P − I`` ``[B, C, N, N]`` (one matrix, expanded over batch and channels),
        ``values = x`` ``[B, C, N, 1]``, ``aggregated = output`` flattened likewise."""
        B, C, H, W = x.shape
        out = self.forward(x)
        A = pooling_affinity(H, W, self.pool_size, device=x.device, dtype=x.dtype)
        return MixerTrace(
            affinity=A.expand(B, C, -1, -1),
            values=x.flatten(2).unsqueeze(-1),
            aggregated=out.flatten(2).unsqueeze(-1),
            output=out,
            note="affinity = average pool (border renormalised) minus identity, same for all channels",
        )

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}"
