"""The photometric half of DINO's multi-crop on batched ``[n, 3, H, W]`` tensors in [0, 1]:
colour jitter (brightness, contrast, saturation, hue in a per-sample order), grayscale and a
per-sample Gaussian blur, each equal to torchvision's operation on one image (tested).

Each operation comes in two parts: a *step* decided on the host from the drawn parameters
(which rows, which factors, which kernel) and its application, which runs on whatever device
the images are on and never waits for it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "IDENTITY_JITTER",
    "BlurStep",
    "JitterStep",
    "apply_blur",
    "apply_jitter",
    "blur_step",
    "color_jitter",
    "gaussian_blur",
    "grayscale",
    "jitter_steps",
]

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # luma weights exactly as torchvision
#: brightness, contrast, saturation factors and hue shift that change nothing
IDENTITY_JITTER = (1.0, 1.0, 1.0, 0.0)


@dataclass
class JitterStep:
    """One colour-jitter operation (0 brightness, 1 contrast, 2 saturation, 3 hue) applied to
    ``rows`` (``[k]`` int64) with per-row ``factors`` (``[k]``)."""

    op: int
    rows: torch.Tensor
    factors: torch.Tensor


@dataclass
class BlurStep:
    """A separable Gaussian blur of ``rows`` (``[k]``) with one kernel row per (row, channel):
    ``kernel`` ``[k·3, 2·radius + 1]``."""

    rows: torch.Tensor
    kernel: torch.Tensor
    radius: int


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """``[n, 3, H, W]`` → ``[n, 1, H, W]`` luma."""
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor.view(-1, 1, 1, 1) * x + (1 - factor.view(-1, 1, 1, 1)) * other).clamp_(0, 1)


def _adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, ``[n]``) in HSV space, as torchvision."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = delta / maxc.clamp_min(1e-12)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.remainder(h / 6.0 + shift.view(-1, 1, 1), 1.0)  # grey pixels: s = 0, h is moot
    # HSV → RGB in closed form: channel n ∈ (5, 3, 1): v − v·s·clamp(min(k, 4 − k), 0, 1),
    # k = (n + 6h) mod 6; one broadcast instead of a 6-way table lookup.
    # (5, 3, 1) made on x's device: a tensor copied from the host would wait for the GPU
    offsets = torch.arange(5.0, 0.0, -2.0, device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * h.unsqueeze(1), 6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) * (1.0 - s.unsqueeze(1) * weight)


def jitter_steps(factors: torch.Tensor, order: torch.Tensor) -> list[JitterStep]:
    """The colour-jitter operations for per-sample factors ``[n, 4]`` and order ``[n, 4]``.

    Each of the four rounds applies, to each sample, the operation its order names; samples are
    grouped by operation so every operation runs once per round on its subset. An operation
    whose factors are all identity is left out.
    """
    steps = []
    for round_ in range(4):
        for op in range(4):
            rows = (order[:, round_] == op).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            f = factors[rows, op]
            if torch.all(f == IDENTITY_JITTER[op]):
                continue
            steps.append(JitterStep(op, rows, f))
    return steps


def apply_jitter(x: torch.Tensor, steps: Sequence[JitterStep]) -> torch.Tensor:
    """``x`` ``[n, 3, H, W]`` in [0, 1] with the jitter ``steps`` applied in order."""
    if not steps:
        return x
    x = x.clone()
    for step in steps:
        sub, f = x[step.rows], step.factors
        if step.op == 0:
            sub = (sub * f.view(-1, 1, 1, 1)).clamp_(0, 1)
        elif step.op == 1:
            mean = grayscale(sub).mean(dim=(1, 2, 3), keepdim=True)
            sub = _blend(sub, mean, f)
        elif step.op == 2:
            sub = _blend(sub, grayscale(sub), f)
        else:
            sub = _adjust_hue(sub, f)
        x[step.rows] = sub
    return x


def color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness/contrast/saturation/hue with per-sample factors ``[n, 4]`` and order ``[n, 4]``."""
    return apply_jitter(x, jitter_steps(factors, order))


def blur_step(sigma: torch.Tensor, max_sigma: float, size: int) -> BlurStep | None:
    """The blur of ``size``-px views with per-sample σ (``[n]`` px; 0 = untouched), or None."""
    rows = (sigma > 0).nonzero().squeeze(1)
    radius = min(math.ceil(3 * max_sigma), size - 1)
    if rows.numel() == 0 or radius < 1:
        return None
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma[rows, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)  # [m·3, k]
    return BlurStep(rows, kernel, radius)


def apply_blur(x: torch.Tensor, blur: BlurStep | None) -> torch.Tensor:
    """Separable Gaussian blur of ``blur.rows`` of ``x`` ``[n, 3, H, W]``, reflect padding."""
    if blur is None:
        return x
    n, c, h, w = x.shape
    r, kernel = blur.radius, blur.kernel
    sub = x[blur.rows].reshape(1, -1, h, w)
    groups = sub.shape[1]
    sub = F.conv2d(
        F.pad(sub, (r, r, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=groups
    )
    sub = F.conv2d(
        F.pad(sub, (0, 0, r, r), mode="reflect"), kernel[:, None, :, None], groups=groups
    )
    out = x.clone()
    out[blur.rows] = sub.view(-1, c, h, w)
    return out


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with per-sample σ (``[n]`` px; 0 = untouched), reflect padding."""
    return apply_blur(x, blur_step(sigma, max_sigma, min(x.shape[-2:])))
