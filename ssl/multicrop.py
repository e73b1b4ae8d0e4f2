"""DINO multi-crop augmentation on batched tensors, reproducible per sample, on any device.

Each source image gives two global views and ``num_local`` local views, with DINO's recipe:
random resized crop (scales 0.4-1 / 0.05-0.4, aspect 3/4-4/3), horizontal flip, colour jitter
(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1, random order, p=0.8), grayscale
(p=0.2), Gaussian blur (p=1.0 / 0.1 / 0.5 for global 1 / global 2 / locals, σ ∈ [0.1, 2] px),
solarize (p=0.2, global 2 only), normalise.

Two halves: :meth:`MultiCropAugment.prepare` draws every random number and stacks the uint8
sources (cheap; a DataLoader worker runs it), :meth:`MultiCropAugment.render` runs the crops and
photometric operations as batched ops on whatever device the :class:`CropBatch` is on (the
workers' CPU, or the training process's GPU). Every host-side decision (which rows an operation
touches, blur kernels, crop boxes) is made in ``prepare``, so ``render`` never waits for the
device. Design notes and departures from the reference: docs/pretraining.md#multi-crop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.ops import roi_align

from ..data.jpeg import EncodedJPEG, decode_jpegs
from .config import AugmentConfig
from .photometric import (
    IDENTITY_JITTER,
    BlurStep,
    JitterStep,
    apply_blur,
    apply_jitter,
    blur_step,
    grayscale,
    jitter_steps,
)

__all__ = ["CropBatch", "MultiCropAugment", "Source", "ViewOps", "ViewParams"]

#: A source image: ``[H, W, 3]`` uint8 pixels, or a JPEG file to decode where views are rendered.
Source = torch.Tensor | np.ndarray | EncodedJPEG

_RRC_ATTEMPTS = 10
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
# Uniform draws per view, in this order (part of the reproducibility contract):
# RRC attempts (scale, ratio) × 10, crop position (2), flip, jitter gate, 4 jitter factors,
# jitter order (4 keys), grayscale, blur gate, blur sigma, solarize.
_DRAWS_PER_VIEW = 2 * _RRC_ATTEMPTS + 2 + 1 + 1 + 4 + 4 + 1 + 1 + 1 + 1


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


@dataclass
class ViewOps:
    """Everything :meth:`MultiCropAugment.render` does to make one view of ``n`` samples.

    ``boxes``: per source group, ``[m, 5]`` float32 (row in the group, x0, y0, x1, y1);
    ``flip`` / ``gray`` / ``solarize``: ``[n]`` bool; ``jitter``: the operations in the order
    they apply (operations that change nothing are left out); ``blur``: None when no row is
    blurred.
    """

    size: int
    boxes: list[torch.Tensor]
    flip: torch.Tensor
    jitter: list[JitterStep]
    gray: torch.Tensor
    blur: BlurStep | None
    solarize: torch.Tensor


@dataclass
class CropBatch:
    """``n`` uint8 sources and the operations of every view: what crosses from a DataLoader
    worker to the process that renders the views (4× less than float32 crops).

    ``sources``: per distinct source size, a ``[m, H, W, 3]`` uint8 stack, or ``m`` JPEG files
    to decode where the views are rendered (``data.decode=device``); ``rows``: the batch rows
    (``[m]`` int64) of each group; ``views``: one :class:`ViewOps` per view, globals first.
    """

    sources: list[torch.Tensor | list[EncodedJPEG]]
    rows: list[torch.Tensor]
    views: list[ViewOps]
    num_samples: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CropBatch:
        """This batch with every tensor on ``device``."""
        return _map_tensors(self, lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> CropBatch:
        """This batch in page-locked memory (a DataLoader with ``pin_memory=True`` calls it), so
        the copy to the GPU can run asynchronously."""
        return _map_tensors(self, lambda t: t.pin_memory())


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(obj, EncodedJPEG):  # the decoder reads its bytes from the CPU
        return obj
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, list):
        return [_map_tensors(x, fn) for x in obj]
    if dataclasses.is_dataclass(obj):
        fields = {f.name: _map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj)}
        return type(obj)(**fields)
    return obj


class MultiCropAugment:
    """Turn uint8 source images into DINO's multi-crop views.

    Args:
        cfg: crop sizes, scales and photometric settings.
        mean, std: per-channel normalisation of the output.
        seed: run seed; the draw of sample ``i`` in ``epoch`` depends only on (seed, epoch, i).

    Call with a list of ``n`` source images (``[H, W, 3]`` uint8 tensors or arrays, any sizes),
    their dataset indices and the epoch. Returns ``[global_views, local_views]`` (the second
    only when ``num_local > 0``): float32 tensors ``[2·n, 3, G, G]`` and
    ``[num_local·n, 3, L, L]``, view-major (rows ``v·n … v·n + n-1`` are view ``v``). A call is
    ``render(prepare(...))``; the two halves may run in different processes and on different
    devices with the same result (bit for bit on CPU).
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

    def __call__(
        self, images: Sequence[Source], indices: Sequence[int], epoch: int
    ) -> list[torch.Tensor]:
        return self.render(self.prepare(images, indices, epoch))

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
        jitter[~jitter_on] = IDENTITY_JITTER
        order = np.argsort(u[:, k + 6 : k + 10], axis=1)
        gray = u[:, k + 10] < cfg.grayscale_p
        low, high = cfg.blur_sigma
        sigma = np.where(u[:, k + 11] < blur_p, low + (high - low) * u[:, k + 12], 0.0)
        solarize = u[:, k + 13] < solarize_p
        return ViewParams(box, flip, jitter, order, gray, sigma, solarize)

    def prepare(self, images: Sequence[Source], indices: Sequence[int], epoch: int) -> CropBatch:
        """Draw every view's parameters and stack the sources by size (no pixel is touched).

        ``images``: ``[H, W, 3]`` uint8 arrays or tensors, or JPEG files to be decoded where
        the views are rendered (:class:`~unimix.data.jpeg.EncodedJPEG`)."""
        if len(images) != len(indices):
            raise ValueError(f"got {len(images)} images but {len(indices)} indices")
        # A copy: cached sources are read-only views, which torch warns about (and a few KB each).
        sources = [
            im if isinstance(im, EncodedJPEG) else torch.from_numpy(np.array(im)) for im in images
        ]
        heights = np.array([_size(s)[0] for s in sources])
        widths = np.array([_size(s)[1] for s in sources])
        u = self.draw_uniforms(epoch, indices)
        stacks, rows = _group_by_shape(sources)
        views = [
            self._view_ops(self.view_params(u, v, heights, widths), v, rows)
            for v in range(self.num_views)
        ]
        return CropBatch(stacks, [torch.from_numpy(r) for r in rows], views, len(sources))

    def _view_ops(self, p: ViewParams, view: int, rows: list[np.ndarray]) -> ViewOps:
        size = self.cfg.local_size if view >= 2 else self.cfg.global_size
        boxes = [
            torch.from_numpy(np.concatenate([np.arange(len(r))[:, None], p.box[r]], 1)).float()
            for r in rows
        ]
        factors = torch.from_numpy(p.jitter).float()
        return ViewOps(
            size=size,
            boxes=boxes,
            flip=torch.from_numpy(p.flip),
            jitter=jitter_steps(factors, torch.from_numpy(p.order)),
            gray=torch.from_numpy(p.gray),
            blur=blur_step(torch.from_numpy(p.blur_sigma).float(), self.cfg.blur_sigma[1], size),
            solarize=torch.from_numpy(p.solarize),
        )

    # ---------------------------------------------------------------------------- rendering
    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """mean and std on ``device``, copied there once (each copy from the host would make
        the GPU's queue drain)."""
        if self.mean.device != device:
            self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self.mean, self.std

    def render(self, batch: CropBatch) -> list[torch.Tensor]:
        """The views of ``batch``, computed on the device its tensors are on."""
        device = batch.rows[0].device
        mean, std = self._normalisation(device)
        # uint8 → float once per source stack, shared by every view
        stacks = [
            _pixels(s, device).permute(0, 3, 1, 2).float().contiguous() for s in batch.sources
        ]
        views = [_render_view(stacks, batch, ops, mean, std) for ops in batch.views]
        out = [torch.cat(views[:2])]
        if len(views) > 2:
            out.append(torch.cat(views[2:]))
        return out


def _render_view(
    stacks: list[torch.Tensor],
    batch: CropBatch,
    ops: ViewOps,
    mean: torch.Tensor,
    std: torch.Tensor,
) -> torch.Tensor:
    n, size = batch.num_samples, ops.size
    x = torch.empty(n, 3, size, size, device=mean.device)
    for stack, rows, boxes in zip(stacks, batch.rows, ops.boxes, strict=True):
        # one roi_align per distinct source size: crop + area-averaged resize of every row
        x[rows] = roi_align(
            stack, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
        )
    x = x / 255.0
    x = torch.where(ops.flip.view(-1, 1, 1, 1), x.flip(-1), x)
    x = apply_jitter(x, ops.jitter)
    x = torch.where(ops.gray.view(-1, 1, 1, 1), grayscale(x).expand_as(x), x)
    x = apply_blur(x, ops.blur)
    x = torch.where(ops.solarize.view(-1, 1, 1, 1) & (x >= 0.5), 1.0 - x, x)
    return (x - mean) / std


# -------------------------------------------------------------------------------- helpers
def _size(source: torch.Tensor | EncodedJPEG) -> tuple[int, int]:
    if isinstance(source, EncodedJPEG):
        return source.height, source.width
    return source.shape[0], source.shape[1]


def _group_by_shape(
    sources: list[torch.Tensor | EncodedJPEG],
) -> tuple[list[torch.Tensor | list[EncodedJPEG]], list[np.ndarray]]:
    """Equal-sized sources together: uint8 ``[m, H, W, 3]`` stacks (JPEG files: lists of
    ``m``, in groups of their own), and the batch rows ``[m]`` of each group."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for row, s in enumerate(sources):
        key = (*_size(s), "jpeg") if isinstance(s, EncodedJPEG) else tuple(s.shape)
        groups.setdefault(key, []).append(row)
    out = [
        [sources[r] for r in rows] if key[-1] == "jpeg" else torch.stack([sources[r] for r in rows])
        for key, rows in groups.items()
    ]
    return out, [np.array(rows) for rows in groups.values()]


def _pixels(group: torch.Tensor | list[EncodedJPEG], device: torch.device) -> torch.Tensor:
    """A source group as a ``[m, H, W, 3]`` uint8 stack on ``device`` (JPEGs decoded there)."""
    if isinstance(group, torch.Tensor):
        return group
    return torch.stack(decode_jpegs(group, device))


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
