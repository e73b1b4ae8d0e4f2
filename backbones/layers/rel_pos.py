"""A learned relative-position bias per head and 2-D offset, derived for any ``H × W`` grid.

CoAtNet's transformer stages and the ``attention`` mixer (``rel_pos=True``) add it inside the
softmax. timm's ``RelPosBias`` sizes its table for one resolution and fails at others; DINO runs
two crop sizes through one instance, so this one derives the bias for each input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

__all__ = ["RelPosBias"]


class RelPosBias(nn.Module):
    """Learned bias per head and 2-D offset, derived for any ``H × W`` grid.

    The table covers offsets of a ``base × base`` grid (``(2·base − 1)²`` entries per head, as
    timm's ``RelPosBias`` sized for the training resolution). For a grid that fits inside it the
    bias is read off exactly (a centre crop of the table); for a larger grid the table is
    resized bicubically to ``(2H − 1) × (2W − 1)``, the usual way of moving relative tables to a
    new resolution (timm's ``resize_rel_pos_bias_table``, Swin, BEiT).
    """

    def __init__(self, num_heads: int, base_size: int) -> None:
        super().__init__()
        if base_size < 1:
            raise ValueError(f"RelPosBias base_size: expected >= 1, got {base_size}")
        self.num_heads, self.base_size = num_heads, base_size
        self.table = nn.Parameter(torch.zeros(num_heads, 2 * base_size - 1, 2 * base_size - 1))
        trunc_normal_(self.table, std=0.02)

    def table_for(self, height: int, width: int) -> torch.Tensor:
        """``[heads, 2H − 1, 2W − 1]``: bias for offsets ``(dy, dx)`` at ``[dy + H − 1, dx + W − 1]``."""
        b = self.base_size
        if height <= b and width <= b:
            return self.table[:, b - height : b + height - 1, b - width : b + width - 1]
        size = (2 * height - 1, 2 * width - 1)
        return F.interpolate(self.table.unsqueeze(0), size=size, mode="bicubic")[0]

    def forward(self, height: int, width: int) -> torch.Tensor:
        """Bias ``[heads, N, N]`` for an ``H × W`` grid (rows: queries)."""
        table = self.table_for(height, width)
        ys, xs = torch.meshgrid(
            torch.arange(height, device=table.device),
            torch.arange(width, device=table.device),
            indexing="ij",
        )
        ys, xs = ys.flatten(), xs.flatten()
        dy = ys[:, None] - ys[None, :] + height - 1
        dx = xs[:, None] - xs[None, :] + width - 1
        return table[:, dy, dx]

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, base_size={self.base_size}"
