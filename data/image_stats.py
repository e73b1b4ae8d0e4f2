"""What a set of images is like, measured once on a fixed sample: size, colour, brightness,
where the content sits, and whether a mirror image or a quarter turn looks like another image
of the set. A recipe sized from the data (:mod:`unimix.ssl.folder_recipe`) reads it.

Two of the numbers are tests rather than descriptions: ``mirror_score`` = P(the mirror image of
a sampled image is farther from its nearest other image than the image itself is), ties counted
half: about 0.5 when mirroring does not change what the set looks like (photos, symmetric
shapes), rising towards 1 when orientation carries meaning (text, digits). ``rotation_score``
is the same with a quarter turn (90°). Distances are taken between small grayscale thumbnails,
each centred and scaled to unit norm, so brightness and contrast do not count. Why the scores
behave so, and their noise: docs/data.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["ImageStats", "dataset_pixels", "image_stats", "mirror_score"]

#: Images read per inspection (the mirror score of a mirror-invariant set: 0.5 ± 0.02 at 1,024).
SAMPLE = 1024
#: Side of the grayscale thumbnails the scores and the centring are measured on.
THUMB = 20
#: An image is grayscale when no pixel's channels differ by more than this (JPEG chroma noise).
GRAY_TOLERANCE = 4


@dataclass(frozen=True)
class ImageStats:
    """Measured on ``sampled`` images of a set of ``count``."""

    count: int
    sampled: int
    side: int  # median of the sampled images' shorter sides, px
    min_side: int
    max_side: int
    gray_share: float  # share of sampled images whose three channels are equal
    mean: tuple[float, float, float]  # per channel, pixel values / 255
    std: tuple[float, float, float]
    centre_share: float  # share of the content in the central quarter of the area (0.25: even)
    mirror_score: float  # see the module docstring; 0.5 when mirroring changes nothing
    rotation_score: float  # the same for a quarter turn

    @property
    def grayscale(self) -> bool:
        return self.gray_share >= 0.95

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dataset_pixels(dataset: Any) -> Callable[[int], np.ndarray]:
    """``i -> [H, W, 3] uint8`` for a unimix dataset (``get_uint8``) or any map-style dataset of
    PIL images, uint8 arrays or ``(image, label)`` pairs."""
    if hasattr(dataset, "get_uint8"):
        return dataset.get_uint8

    def read(index: int) -> np.ndarray:
        item = dataset[index]
        image = item[0] if isinstance(item, tuple | list) else item
        if hasattr(image, "convert"):
            image = np.asarray(image.convert("RGB"))
        return np.asarray(image, dtype=np.uint8)

    return read


def _thumb(pixels: np.ndarray) -> np.ndarray:
    gray = Image.fromarray(pixels.mean(axis=2).astype(np.uint8))
    return np.asarray(gray.resize((THUMB, THUMB), Image.BOX), dtype=np.float32)


def _unit_rows(thumbs: np.ndarray) -> np.ndarray:
    flat = thumbs.reshape(len(thumbs), -1).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    return flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-8)


def mirror_score(thumbs: np.ndarray, transform: Callable[[np.ndarray], np.ndarray]) -> float:
    """P(d(transform(x_i), others) > d(x_i, others)) over ``thumbs [N, S, S]``, ties counted half
    (``others``: every thumb but ``x_i``; d: Euclidean between unit-norm centred thumbs)."""
    if len(thumbs) < 3:
        return 0.5
    rows = _unit_rows(thumbs)
    moved = _unit_rows(np.stack([transform(t) for t in thumbs]))
    own = rows @ rows.T
    other = moved @ rows.T
    np.fill_diagonal(own, -np.inf)
    np.fill_diagonal(other, -np.inf)
    # nearest = largest cosine; distance 2 - 2·cos is monotone in it
    near_own, near_moved = own.max(axis=1), other.max(axis=1)
    farther = (near_moved < near_own - 1e-9).mean()
    ties = (np.abs(near_moved - near_own) <= 1e-9).mean()
    return float(farther + ties / 2)


def _centre_share(thumbs: np.ndarray) -> float:
    """Share of the mean content map (|pixel − median of the image's border|) inside the
    central box of half the side."""
    border = np.concatenate(
        [thumbs[:, 0, :], thumbs[:, -1, :], thumbs[:, :, 0], thumbs[:, :, -1]], axis=1
    )
    content = np.abs(thumbs - np.median(border, axis=1)[:, None, None]).mean(axis=0)
    total = content.sum()
    if total <= 0:
        return 0.25
    q = THUMB // 4
    return float(content[q : THUMB - q, q : THUMB - q].sum() / total)


def image_stats(dataset: Any, sample: int = SAMPLE, seed: int = 0) -> ImageStats:
    """Measure ``dataset`` (see :func:`dataset_pixels`) on ``min(sample, len)`` images drawn
    without replacement by a generator seeded with ``seed`` (the same images every time)."""
    count = len(dataset)
    if count == 0:
        raise ValueError("image_stats: the dataset is empty")
    read = dataset_pixels(dataset)
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(count, size=min(sample, count), replace=False))
    sides, gray, thumbs = [], [], []
    sums, squares, pixels_seen = np.zeros(3), np.zeros(3), 0
    for index in indices:
        pixels = read(int(index))
        sides.append(min(pixels.shape[:2]))
        spread = pixels.max(axis=2).astype(np.int16) - pixels.min(axis=2)
        gray.append(bool(spread.max() <= GRAY_TOLERANCE))
        values = pixels.reshape(-1, 3).astype(np.float64) / 255.0
        sums += values.sum(axis=0)
        squares += (values**2).sum(axis=0)
        pixels_seen += len(values)
        thumbs.append(_thumb(pixels))
    mean = sums / pixels_seen
    std = np.sqrt(np.maximum(squares / pixels_seen - mean**2, 0.0))
    thumbs_arr = np.stack(thumbs)
    return ImageStats(
        count=count,
        sampled=len(indices),
        side=int(np.median(sides)),
        min_side=int(min(sides)),
        max_side=int(max(sides)),
        gray_share=float(np.mean(gray)),
        mean=tuple(round(float(v), 4) for v in mean),
        std=tuple(round(float(v), 4) for v in std),
        centre_share=round(_centre_share(thumbs_arr), 4),
        mirror_score=round(mirror_score(thumbs_arr, np.fliplr), 4),
        rotation_score=round(mirror_score(thumbs_arr, np.rot90), 4),
    )
