"""Container's token mixer: a dynamic and a static affinity summed over shared values.

Paper: Gao, Lu, Li, Mottaghi, Kembhavi, *Container: Context Aggregation Network*, NeurIPS 2021
(https://arxiv.org/abs/2106.01401); official code: allenai/container (``models.py``, read for
facts, not copied). ``A = α·A_dynamic + β·A_static`` on one shared ``V``, with
``A_dynamic = softmax(q kᵀ/√d)`` per head and ``A_static`` a 5×5 depthwise convolution (a
per-channel Toeplitz band). Modes (:data:`MIX_MODES`): ``"affine"`` (learnable ``α``, ``β``,
both starting at 0.5: the paper's Container), ``"sigmoid"`` (``σ(s)`` and ``1 − σ(s)``, ``s``
starting at 0: the official Container-Light stage-4 ``MixBlock``) and ``"static"``
(``A_static`` only, values from a 1×1 conv: the official ``CBlock``).

Departure, on purpose: the static conv has no bias, so the static path is an exact ``A·V``
(docs/backbones.md).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.affinity import depthwise_affinity
from .base import MixerTrace, TokenMixer

__all__ = ["MIX_MODES", "ContainerMixer"]

MixMode = Literal["affine", "sigmoid", "static"]
MIX_MODES = ("affine", "sigmoid", "static")


class ContainerMixer(TokenMixer):
    """Container token mixer: ``[B, dim, H, W] → [B, dim, H, W]``.

    ``proj((w_dyn·A_dynamic + w_static·A_static) · V)`` where ``q, k, V`` come from one 1×1 conv
    (``V`` only in ``"static"`` mode) and ``(w_dyn, w_static)`` are ``(α, β)``, ``(σ(s), 1 − σ(s))``
    or ``(0, 1)`` by ``mode`` (see the module docstring).

    Args:
        dim: channels in and out.
        mode: ``"affine"``, ``"sigmoid"`` or ``"static"``.
        head_dim: channels per attention head (``dim`` must be divisible by it).
        kernel_size: side of the static depthwise kernel (odd).
        qkv_bias: bias of the 1×1 q/k/v conv (the official code has one).
        alpha_init, beta_init: starting ``α``, ``β`` of ``"affine"`` mode.
    """

    no_weight_decay_names = ("alpha", "beta", "mix_logit")

    def __init__(
        self,
        dim: int,
        mode: MixMode = "affine",
        head_dim: int = 32,
        kernel_size: int = 5,
        qkv_bias: bool = True,
        alpha_init: float = 0.5,
        beta_init: float = 0.5,
    ) -> None:
        super().__init__()
        if mode not in MIX_MODES:
            raise ValueError(f"ContainerMixer mode: expected one of {MIX_MODES}, got {mode!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"ContainerMixer kernel_size: expected an odd int >= 1, got {kernel_size!r}"
            )
        head_dim = min(head_dim, dim)
        if dim % head_dim:
            raise ValueError(f"ContainerMixer: dim={dim} is not divisible by head_dim={head_dim}")
        self.dim, self.mode, self.kernel_size = dim, mode, kernel_size
        self.head_dim = head_dim
        self.num_heads = dim // head_dim
        self.scale = head_dim**-0.5
        dynamic = mode != "static"
        # channels of the 1×1 conv: [q | k | v], each `heads × head_dim` (the official order)
        self.qkv = nn.Conv2d(dim, 3 * dim if dynamic else dim, 1, bias=qkv_bias)
        self.static = nn.Conv2d(
            dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=False
        )
        self.proj = nn.Conv2d(dim, dim, 1)
        if mode == "affine":
            self.alpha = nn.Parameter(torch.tensor(float(alpha_init)))
            self.beta = nn.Parameter(torch.tensor(float(beta_init)))
        elif mode == "sigmoid":
            self.mix_logit = nn.Parameter(torch.zeros(()))

    def mix_weights(self) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(w_dynamic, w_static)``: scalars weighting the two affinities (``None``: no dynamic path)."""
        if self.mode == "affine":
            return self.alpha, self.beta
        if self.mode == "sigmoid":
            gate = torch.sigmoid(self.mix_logit)
            return gate, 1.0 - gate
        return None, self.static.weight.new_ones(())

    def _project(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """``q, k`` as ``[B, heads, N, d]`` (``None`` in static mode) and ``V`` as ``[B, dim, H, W]``."""
        if x.ndim != 4 or x.shape[1] != self.dim:
            raise ValueError(
                f"ContainerMixer: expected input [B, {self.dim}, H, W], got {tuple(x.shape)}"
            )
        qkv = self.qkv(x)
        if self.mode == "static":
            return None, None, qkv
        B, _, H, W = x.shape
        q, k, _ = qkv.view(B, 3, self.num_heads, self.head_dim, H * W).transpose(-1, -2).unbind(1)
        return q, k, qkv[:, 2 * self.dim :]

    def _heads(self, v: torch.Tensor) -> torch.Tensor:
        """``[B, dim, H, W]`` → ``[B, heads, N, d]``."""
        B, _, H, W = v.shape
        return v.reshape(B, self.num_heads, self.head_dim, H * W).transpose(-1, -2)

    def _aggregate(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The mixed values ``[B, dim, H, W]`` (fast path), plus ``q, k`` and ``V`` for tracing."""
        q, k, v = self._project(x)
        w_dyn, w_static = self.mix_weights()
        static = self.static(v)
        if w_dyn is None:
            return static, None, v
        B, _, H, W = v.shape
        attn = F.scaled_dot_product_attention(q, k, self._heads(v))  # [B, heads, N, d]
        attn = attn.transpose(-1, -2).reshape(B, self.dim, H, W)
        return w_dyn * attn + w_static * static, (q, k), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self._aggregate(x)[0])

    def attention_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``A_dynamic = softmax(q kᵀ/√d)``: ``[B, heads, N, N]`` (``O(N²)`` memory)."""
        if self.mode == "static":
            raise ValueError("ContainerMixer: mode='static' has no attention path")
        q, k, _ = self._project(x)
        return ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1)

    def static_affinity(self, height: int, width: int) -> torch.Tensor:
        """``A_static``: the 5×5 depthwise conv as a per-channel ``[dim, N, N]`` Toeplitz band."""
        return depthwise_affinity(self.static.weight, height, width, padding=self.kernel_size // 2)

    def trace(self, x: torch.Tensor) -> MixerTrace:
        """Per-channel view of the combined affinity.

        ``affinity`` ``[B, dim, N, N]`` = ``w_dyn · A_dynamic`` (each channel takes its head's
        attention) ``+ w_static · A_static``; ``values`` = the shared ``V`` as ``[B, dim, N, 1]``;
        ``aggregated`` = the fast path's mix ``[B, dim, N, 1]``; ``output`` = ``proj(mix)``.
        """
        mixed, qk, v = self._aggregate(x)
        B, C, H, W = v.shape
        w_dyn, w_static = self.mix_weights()
        affinity = (w_static * self.static_affinity(H, W)).unsqueeze(0).expand(B, -1, -1, -1)
        if qk is not None:
            q, k = qk
            probs = ((q * self.scale) @ k.transpose(-1, -2)).softmax(dim=-1)
            affinity = affinity + w_dyn * probs.repeat_interleave(self.head_dim, dim=1)
        return MixerTrace(
            affinity=affinity,
            values=v.flatten(2).unsqueeze(-1),
            aggregated=mixed.flatten(2).unsqueeze(-1),
            output=self.proj(mixed),
        )

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, mode={self.mode!r}, num_heads={self.num_heads}, "
            f"kernel_size={self.kernel_size}"
        )
