"""The one interface every token mixer implements.

Container's view: a token mixer is ``Y = Concat(A_1 V_1, ..., A_G V_G) · W`` where ``A_g`` is an
``N × N`` affinity over the ``N = H·W`` positions and ``V_g`` are the values of group ``g``
(a head for attention, a channel for per-channel static mixers such as depthwise conv or
pooling). The residual ``+ X`` lives in the block, not in the mixer.

Every mixer takes and returns channels-first maps ``[B, C, H, W]`` and can explain itself:
``affinity(x)`` → ``[B, G, N, N]``, the effective A (``G`` = heads, or ``C`` for per-channel
static mixers; a static A is expanded over the batch); ``trace(x)`` → :class:`MixerTrace` with
the affinity, the values it is applied to, the aggregated values exactly as ``forward`` computes
them (by its fast path) and the output. ``trace(x).output`` equals ``forward(x)`` and
``trace(x).affinity @ trace(x).values`` equals ``trace(x).aggregated``: that is how tests prove
the affinity is the truth. Building ``A`` costs ``O(N²)`` memory: for small inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["MixerTrace", "TokenMixer"]


@dataclass
class MixerTrace:
    """What a mixer did to one input.

    Attributes:
        affinity: ``[B, G, N, N]`` effective affinity (rows = query positions).
        values: ``[B, G, N, D]`` the values A is applied to (``D`` = channels per group).
        aggregated: ``[B, G, N, D]`` the mixer's own result of the aggregation step.
        output: ``[B, C, H, W]`` the mixer's output (equal to ``forward(x)``).
        note: what the affinity does not cover, for mixers that are not a pure ``A·V``.
    """

    affinity: torch.Tensor
    values: torch.Tensor
    aggregated: torch.Tensor
    output: torch.Tensor
    note: str = ""


class TokenMixer(nn.Module):
    """Base class: ``forward(x: [B, C, H, W]) -> [B, C, H, W]`` plus ``trace`` and ``affinity``.

    Subclasses are built as ``mixer_cls(dim=dim, **kwargs)`` and implement ``trace``; they may
    override ``forward`` with a path that skips building the trace. ``no_weight_decay_names``
    lists the mixer's own parameters (bare names) that a model keeps out of weight decay.
    """

    no_weight_decay_names: tuple[str, ...] = ()

    def trace(self, x: torch.Tensor) -> MixerTrace:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not implement trace()")

    def affinity(self, x: torch.Tensor) -> torch.Tensor:
        """Effective affinity ``[B, G, N, N]`` for input ``x: [B, C, H, W]``."""
        return self.trace(x).affinity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trace(x).output
