"""The affinity of a depthwise convolution: a per-channel Toeplitz band ``[C, N_out, N_in]``.

Static mixers (depthwise conv, SepConv, Container's static path, MBConv) show their ``A`` with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["depthwise_affinity"]


def depthwise_affinity(
    weight: torch.Tensor, height: int, width: int, stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """Affinity of a bias-free depthwise conv, ``[C, N_out, N_in]``.

    Column ``j`` is the conv's response to a unit impulse at input position ``j``, so
    ``A @ x.flatten(-2)`` equals ``conv2d(x, weight, stride, padding, groups=C)`` exactly.
    """
    channels = weight.shape[0]
    n_in = height * width
    impulses = torch.eye(n_in, device=weight.device, dtype=weight.dtype).view(
        n_in, 1, height, width
    )
    response = F.conv2d(
        impulses.expand(n_in, channels, height, width),
        weight,
        stride=stride,
        padding=padding,
        groups=channels,
    )  # [N_in, C, H_out, W_out]
    return response.flatten(2).permute(1, 2, 0)
