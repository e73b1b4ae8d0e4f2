"""DINO multi-crop augmentation on batched tensors, reproducible per sample.

Each source image gives two global views and ``num_local`` local views, with DINO's recipe:
random resized crop (scales 0.4-1 / 0.05-0.4, aspect 3/4-4/3), horizontal flip, colour jitter
(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, random order, p=0.8), grayscale
(p=0.2), Gaussian blur (p=1.0 / 0.1 / 0.5 for global 1 / global 2 / locals, σ ∈ [0.1, 2] px),
solarize (p=0.2, global 2 only), normalise.

Why hand-written rather than torchvision v2 or lightly's ``DINOTransform``: both draw their
randomness from the global RNG one PIL image at a time. Here every random number of sample
``i`` comes from a generator seeded by ``(seed, epoch, i)``, so the crops are the same whatever
the number of processes or workers and across a resume, and every operation after the draw
runs once per batch on ``[n, 3, H, W]`` tensors (one ``roi_align`` crops and resizes all views
of a size; the blur is one grouped convolution), which is several times cheaper per image on
a CPU than the per-image PIL pipeline.

Departures from the reference, all deliberate: crops are resampled with area-averaged bilinear
sampling (``roi_align``) instead of PIL bicubic; the blur's σ is in pixels of the output view
(as PIL's radius) — at 32 px, σ up to 2 px with p=1 on the first global view removes most
detail, which is the reference's semantics; recipes for tiny images lower ``blur_sigma``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .config import AugmentConfig

__all__ = ["MultiCropAugment", "ViewParams"]

_RRC_ATTEMPTS = 10
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
# Uniform draws per view, in this order (part of the reproducibility contract):
# RRC attempts (scale, ratio) × 10, crop position (2), flip, jitter gate, 4 jitter factors,
# jitter order (4 keys), grayscale, blur gate, blur sigma, solarize.
_DRAWS_PER_VIEW = 2 * _RRC_ATTEMPTS + 2 + 1 + 1 + 4 + 4 + 1 + 1 + 1 + 1
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # luma weights exactly as torchvision
_HSV_OFFSETS = torch.tensor([5.0, 3.0, 1.0])


@dataclass
class ViewParams:
    """Random parameters of one view for ``n`` samples (numpy arrays of length ``n``).

    ``box``: ``[n, 4]`` crop (x0, y0, x1, y1) in source pixels; ``jitter``: ``[n, 4]``
    brightness/contrast/saturation factors and hue shift (identity where not applied);
    ``order``: ``[n, 4]`` permutation of the four jitter operations.
    """

    box: np.ndarray
    flip: np.ndarray
    jitter: np.ndarray
    order: np.ndarray
    gray: np.ndarray
    blur_sigma: np.ndarray  # 0 where not blurred
    solarize: np.ndarray


class MultiCropAugment:
    """Turn uint8 source images into DINO's multi-crop views.

    Args:
        cfg: crop sizes, scales and photometric settings.
        mean, std: per-channel normalisation of the output.
        seed: run seed; the draw of sample ``i`` in ``epoch`` depends only on (seed, epoch, i).

    Call with a list of ``n`` source images (``[H, W, 3]`` uint8 tensors or arrays, any sizes),
    their dataset indices and the epoch. Returns ``[global_views, local_views]`` (the second
    only when ``num_local > 0``): float32 tensors ``[2·n, 3, G, G]`` and
    ``[num_local·n, 3, L, L]``, view-major (rows ``v·n … v·n + n-1`` are view ``v``).
    """

    def __init__(
        self,
        cfg: AugmentConfig,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
        seed: int = 0,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.num_views = 2 + cfg.num_local

    # ---------------------------------------------------------------------------- drawing
    def draw_uniforms(self, epoch: int, indices: Sequence[int]) -> np.ndarray:
        """``[n, num_views, D]`` uniforms in [0, 1); row ``j`` depends only on (seed, epoch, i_j)."""
        out = np.empty((len(indices), self.num_views, _DRAWS_PER_VIEW))
        for row, index in enumerate(indices):
            rng = np.random.default_rng([self.seed, epoch, int(index)])
            out[row] = rng.random((self.num_views, _DRAWS_PER_VIEW))
        return out

    def view_params(
        self, u: np.ndarray, view: int, heights: np.ndarray, widths: np.ndarray
    ) -> ViewParams:
        """Parameters of view ``view`` from uniforms ``u`` (``[n, num_views, D]``)."""
        cfg = self.cfg
        u = u[:, view]
        is_local = view >= 2
        scale = cfg.local_scale if is_local else cfg.global_scale
        blur_p = cfg.blur_p[2] if is_local else cfg.blur_p[view]
        solarize_p = cfg.solarize_p if view == 1 else 0.0
        box = _random_resized_crop(u[:, : 2 * _RRC_ATTEMPTS], u[:, 20:22], scale, heights, widths)
        k = 2 * _RRC_ATTEMPTS + 2
        flip = u[:, k] < cfg.flip_p
        jitter_on = u[:, k + 1] < cfg.jitter_p
        f = u[:, k + 2 : k + 6]
        jitter = np.stack(
            [
                1 + cfg.brightness * (2 * f[:, 0] - 1),
                1 + cfg.contrast * (2 * f[:, 1] - 1),
                1 + cfg.saturation * (2 * f[:, 2] - 1),
                cfg.hue * (2 * f[:, 3] - 1),
            ],
            axis=1,
        )
        jitter[:, :3] = np.clip(jitter[:, :3], 0, None)
        jitter[~jitter_on] = (1.0, 1.0, 1.0, 0.0)
        order = np.argsort(u[:, k + 6 : k + 10], axis=1)
        gray = u[:, k + 10] < cfg.grayscale_p
        low, high = cfg.blur_sigma
        sigma = np.where(u[:, k + 11] < blur_p, low + (high - low) * u[:, k + 12], 0.0)
        solarize = u[:, k + 13] < solarize_p
        return ViewParams(box, flip, jitter, order, gray, sigma, solarize)

    # ---------------------------------------------------------------------------- applying
    def __call__(
        self, images: Sequence[torch.Tensor | np.ndarray], indices: Sequence[int], epoch: int
    ) -> list[torch.Tensor]:
        if len(images) != len(indices):
            raise ValueError(f"got {len(images)} images but {len(indices)} indices")
        # A copy: cached sources are read-only views, which torch warns about (and a few KB each).
        sources = [torch.from_numpy(np.array(im)) for im in images]
        heights = np.array([s.shape[0] for s in sources])
        widths = np.array([s.shape[1] for s in sources])
        u = self.draw_uniforms(epoch, indices)
        groups = _group_by_shape(sources)
        globals_ = [self._view(groups, len(sources), u, v, heights, widths) for v in (0, 1)]
        out = [torch.cat(globals_)]
        if self.cfg.num_local:
            views = range(2, self.num_views)
            out.append(
                torch.cat([self._view(groups, len(sources), u, v, heights, widths) for v in views])
            )
        return out

    def _view(
        self,
        groups: list[tuple[torch.Tensor, np.ndarray]],
        n: int,
        u: np.ndarray,
        view: int,
        heights: np.ndarray,
        widths: np.ndarray,
    ) -> torch.Tensor:
        p = self.view_params(u, view, heights, widths)
        size = self.cfg.local_size if view >= 2 else self.cfg.global_size
        x = torch.empty(n, 3, size, size)
        for batch, rows in groups:  # one roi_align per distinct source size
            boxes = torch.from_numpy(
                np.concatenate([np.arange(len(rows))[:, None], p.box[rows]], 1)
            )
            x[torch.from_numpy(rows)] = roi_align(
                batch,
                boxes.float(),
                output_size=size,
                spatial_scale=1.0,
                sampling_ratio=-1,
                aligned=True,
            )
        x = x / 255.0
        flip = torch.from_numpy(p.flip)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        x = _color_jitter(x, torch.from_numpy(p.jitter).float(), torch.from_numpy(p.order))
        gray = torch.from_numpy(p.gray).view(-1, 1, 1, 1)
        x = torch.where(gray, _grayscale(x).expand_as(x), x)
        x = _gaussian_blur(x, torch.from_numpy(p.blur_sigma).float(), self.cfg.blur_sigma[1])
        solarize = torch.from_numpy(p.solarize).view(-1, 1, 1, 1)
        x = torch.where(solarize & (x >= 0.5), 1.0 - x, x)
        return (x - self.mean) / self.std


# -------------------------------------------------------------------------------- helpers
def _group_by_shape(sources: list[torch.Tensor]) -> list[tuple[torch.Tensor, np.ndarray]]:
    """Stack equal-sized sources: ``[(float [m, 3, H, W], rows [m]), ...]``."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for row, s in enumerate(sources):
        by_shape.setdefault(tuple(s.shape), []).append(row)
    groups = []
    for rows in by_shape.values():
        batch = torch.stack([sources[r] for r in rows]).permute(0, 3, 1, 2).float()
        groups.append((batch.contiguous(), np.array(rows)))
    return groups


def _random_resized_crop(
    attempts: np.ndarray,
    position: np.ndarray,
    scale: tuple[float, float],
    heights: np.ndarray,
    widths: np.ndarray,
) -> np.ndarray:
    """torchvision's RandomResizedCrop box rule, vectorised: ``[n, 4]`` (x0, y0, x1, y1).

    Up to 10 attempts of (area fraction, log aspect ratio); the first that fits wins;
    otherwise a centre crop at the clamped aspect ratio, as torchvision.
    """
    n = len(heights)
    area = (heights * widths)[:, None]
    target = area * (scale[0] + (scale[1] - scale[0]) * attempts[:, 0::2])
    ratio = np.exp(_LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * attempts[:, 1::2])
    w = np.rint(np.sqrt(target * ratio))
    h = np.rint(np.sqrt(target / ratio))
    fits = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
    first = np.argmax(fits, axis=1)
    ok = fits[np.arange(n), first]
    cw, ch = w[np.arange(n), first], h[np.arange(n), first]
    # Fallback: centre crop of the whole image at an aspect ratio clamped to [3/4, 4/3].
    in_ratio = widths / heights
    fw = np.where(
        in_ratio < 3 / 4, widths, np.where(in_ratio > 4 / 3, np.rint(heights * 4 / 3), widths)
    )
    fh = np.where(in_ratio < 3 / 4, np.rint(widths * 4 / 3), heights)
    cw, ch = np.where(ok, cw, fw), np.where(ok, ch, fh)
    x0 = np.where(ok, np.floor(position[:, 0] * (widths - cw + 1)), (widths - cw) // 2)
    y0 = np.where(ok, np.floor(position[:, 1] * (heights - ch + 1)), (heights - ch) // 2)
    return np.stack([x0, y0, x0 + cw, y0 + ch], axis=1)


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """``[n, 3, H, W]`` → ``[n, 1, H, W]`` luma."""
    r, g, b = x.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


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
    k = torch.remainder(_HSV_OFFSETS.view(1, 3, 1, 1) + 6.0 * h.unsqueeze(1), 6.0)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc.unsqueeze(1) * (1.0 - s.unsqueeze(1) * weight)


def _color_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Brightness/contrast/saturation/hue with per-sample factors ``[n, 4]`` and order ``[n, 4]``.

    Each of the four rounds applies, to each sample, the operation its order names; samples are
    grouped by operation so every operation runs once per round on its subset.
    """
    x = x.clone()
    for round_ in range(4):
        for op in range(4):
            rows = (order[:, round_] == op).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            sub, f = x[rows], factors[rows, op]
            if op == 0:
                if torch.all(f == 1):
                    continue
                sub = (sub * f.view(-1, 1, 1, 1)).clamp_(0, 1)
            elif op == 1:
                if torch.all(f == 1):
                    continue
                mean = _grayscale(sub).mean(dim=(1, 2, 3), keepdim=True)
                sub = _blend(sub, mean, f)
            elif op == 2:
                if torch.all(f == 1):
                    continue
                sub = _blend(sub, _grayscale(sub), f)
            else:
                if torch.all(f == 0):
                    continue
                sub = _adjust_hue(sub, f)
            x[rows] = sub
    return x


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with per-sample σ (``[n]`` px; 0 = untouched), reflect padding."""
    rows = (sigma > 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return x
    n, c, h, w = x.shape
    radius = min(math.ceil(3 * max_sigma), h - 1, w - 1)
    if radius < 1:
        return x
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma[rows, None]) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [m·c, k]
    sub = x[rows].reshape(1, -1, h, w)
    groups = sub.shape[1]
    sub = F.conv2d(
        F.pad(sub, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=groups
    )
    sub = F.conv2d(
        F.pad(sub, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=groups
    )
    out = x.clone()
    out[rows] = sub.view(-1, c, h, w)
    return out
