"""TokenMLP: a learned, static, dense ``N × N`` token mix over a fixed token count.

MLP-Mixer (Tolstikhin et al., 2021, https://arxiv.org/abs/2105.01601) mixes tokens with a
two-layer MLP along the token axis; ResMLP (Touvron et al., 2021, https://arxiv.org/abs/2105.03404)
with a single linear layer. We implement the **single linear layer** (ResMLP's cross-patch
sublayer), shared by all channels, because only that form is exactly Container's "static, dense"
affinity: ``A = W_tokens`` ``[N, N]``, the same for every input. A GELU between two token layers
would make the mix depend on the values, and ``A · V`` would no longer describe it.

Fixed token count, documented: ``W_tokens`` is ``num_tokens × num_tokens``, so the mixer only runs
on maps with exactly ``H·W = num_tokens`` positions; any other size raises a ``ValueError``
naming the expected and received sizes. (DINO's two crop sizes give two token counts, so no
unimix preset uses this mixer; it is here for single-resolution experiments and for the affinity
picture.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import MixerTrace, TokenMixer

__all__ = ["TokenMLP"]


class TokenMLP(TokenMixer):
    """``y[:, c] = W_tokens · x[:, c] + b``: ``[B, C, H, W] → [B, C, H, W]`` with ``H·W = num_tokens``.

    Args:
        dim: channels (the token mix is shared by all of them).
        num_tokens: the fixed ``N = H·W``.
        bias: learn a per-token bias ``b`` ``[N]`` (added after the affinity step).
    """

    def __init__(self, dim: int, num_tokens: int, bias: bool = True) -> None:
        super().__init__()
        if not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"TokenMLP num_tokens: expected an int >= 1, got {num_tokens!r}")
        self.dim, self.num_tokens = dim, num_tokens
        self.mix = nn.Linear(num_tokens, num_tokens, bias=bias)  # weight[i, j]: token j → token i

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(
                f"TokenMLP: expected input [B, {self.dim}, H, W], got {tuple(x.shape)}"
            )
        H, W = x.shape[-2:]
        if self.num_tokens != H * W:
            raise ValueError(
                f"TokenMLP: built for {self.num_tokens} tokens, got a {H}x{W} map "
                f"({H * W} tokens); it mixes a fixed token count"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        return self.mix(x.flatten(2)).view_as(x)

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """``affinity = W_tokens`` ``[B, 1, N, N]`` (one group holding all channels),
        ``values = x`` ``[B, 1, N, C]``, ``aggregated = A · V`` before the bias."""
        self._check(x)
        B, C, H, W = x.shape
        mixed = F.linear(x.flatten(2), self.mix.weight)  # forward's path, before the bias
        out = mixed if self.mix.bias is None else mixed + self.mix.bias
        return MixerTrace(
            affinity=self.mix.weight.expand(B, 1, -1, -1),
            values=x.flatten(2).transpose(1, 2).unsqueeze(1),  # [B, 1, N, C]
            aggregated=mixed.transpose(1, 2).unsqueeze(1),
            output=out.view(B, C, H, W),
            note="affinity = learned token-mixing matrix (static); a per-token bias is added after",
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_tokens={self.num_tokens}"
