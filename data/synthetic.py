"""SyntheticShapes: an embedded, deterministic demo/smoke dataset drawn in memory with numpy.

Each image shows one shape whose **kind is the label** (circle, square, triangle, star, cross,
ring, crescent, bar, corner, frame — all mirror-symmetric, so a horizontal flip keeps the
class). Everything else is a nuisance drawn at random per image (position, scale, rotation,
colours, background texture, pixel noise): it dominates the raw pixels, while the label is
invariant to exactly the augmentations DINO trains with (docs/data.md).

Images are generated in blocks of :data:`BLOCK` with a seed derived from ``(seed, split,
block)``, so image ``i`` is the same whatever ``num_samples`` is, and splits never share a
random stream. Same seed → identical pixels. The whole set lives in RAM as one uint8 array
(``num_samples · image_size² · 3`` bytes). A demonstration and test dataset, not a benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from .arrays import ArrayImageDataset

__all__ = ["SHAPES", "SyntheticShapes", "render_shapes"]

#: Class names, in label order.
SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "crescent",
    "bar",
    "corner",
    "frame",
)
#: Images generated per independently seeded block.
BLOCK = 512
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_DEFAULT_NUM_SAMPLES = {"train": 10_000, "val": 2_000, "test": 2_000}
_NOISE_GRID = 6  # control points per side of the smooth-noise background texture


# Signed distance (approximate away from the edge; exact enough for 1-px antialiasing) of each
# shape in local coordinates where the shape spans about [-1, 1]². Negative inside.
def _box(x: np.ndarray, y: np.ndarray, hx: float, hy: float) -> np.ndarray:
    return np.maximum(np.abs(x) - hx, np.abs(y) - hy)


def _sdf_circle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.hypot(x, y) - 1.0


def _sdf_square(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _box(x, y, 0.82, 0.82)


def _sdf_triangle(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Equilateral, circumradius 1.15: three half-planes with apothem 0.575.
    angles = np.pi / 2 + 2 * np.pi / 3 * np.arange(3)
    return np.max(
        [np.cos(a) * x + np.sin(a) * y - 0.575 for a in angles],
        axis=0,
    )


def _sdf_star(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Five points: the radius follows a triangle wave in angle between 0.45 and 1.15.
    r, theta = np.hypot(x, y), np.arctan2(y, x)
    phase = np.mod(theta / (2 * np.pi / 5), 1.0)
    radius = 0.45 + 0.7 * np.abs(2 * phase - 1.0)
    return (r - radius) * 0.6  # slope factor: radial gap overstates the distance to the edge


def _sdf_cross(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.minimum(_box(x, y, 1.0, 0.3), _box(x, y, 0.3, 1.0))


def _sdf_ring(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(np.hypot(x, y) - 0.75) - 0.27


def _sdf_crescent(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.maximum(np.hypot(x, y) - 1.0, 0.85 - np.hypot(x - 0.5, y))


def _sdf_bar(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _box(x, y, 1.1, 0.3)


def _sdf_corner(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # An L of two equal arms, centred on its bounding box.
    return np.minimum(_box(x, y + 0.6, 0.9, 0.3), _box(x + 0.6, y, 0.3, 0.9))


def _sdf_frame(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    chebyshev = np.maximum(np.abs(x), np.abs(y))
    return np.maximum(chebyshev - 0.9, 0.55 - chebyshev)


_SDFS: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _sdf_circle,
    _sdf_square,
    _sdf_triangle,
    _sdf_star,
    _sdf_cross,
    _sdf_ring,
    _sdf_crescent,
    _sdf_bar,
    _sdf_corner,
    _sdf_frame,
)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[n]`` hue/saturation/value in [0, 1] → ``[n, 3]`` RGB in [0, 1]."""
    k = np.mod(np.stack([5.0 + h * 6, 3.0 + h * 6, 1.0 + h * 6], axis=-1), 6.0)
    return v[:, None] - (v * s)[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _random_colours(rng: np.random.Generator, light: np.ndarray) -> np.ndarray:
    """``[n, 3]`` colours: value in [0.62, 1] where ``light`` else [0.0, 0.38]; any hue."""
    n = len(light)
    value = np.where(light, rng.uniform(0.62, 1.0, n), rng.uniform(0.0, 0.38, n))
    return _hsv_to_rgb(rng.uniform(0.0, 1.0, n), rng.uniform(0.0, 1.0, n), value)


def _bilinear_weights(size: int, points: int) -> np.ndarray:
    """``[size, points]`` interpolation matrix from a control grid onto pixel centres."""
    position = (np.arange(size) + 0.5) / size * (points - 1)
    left = np.minimum(np.floor(position).astype(int), points - 2)
    frac = position - left
    weights = np.zeros((size, points))
    weights[np.arange(size), left] = 1.0 - frac
    weights[np.arange(size), left + 1] = frac
    return weights


def _sample_factors(rng: np.random.Generator, n: int, size: int) -> dict[str, np.ndarray]:
    """Per-image nuisance factors for ``n`` images (drawn in a fixed order: part of the
    determinism contract)."""
    radius = rng.uniform(0.25, 0.4, n) * size  # the shape's unit length in pixels
    margin = 0.75 * radius
    light_background = rng.random(n) < 0.5
    background = _random_colours(rng, light_background)
    # The texture's second colour goes half-way to another random colour: visible in raw
    # pixels, yet fainter than the shape's edge, so it is not the most salient cue in a view.
    texture_colour = background + 0.5 * (_random_colours(rng, light_background) - background)
    return {
        "radius": radius,
        "cx": margin + rng.uniform(0.0, 1.0, n) * (size - 2 * margin),
        "cy": margin + rng.uniform(0.0, 1.0, n) * (size - 2 * margin),
        "rotation": rng.uniform(0.0, 2 * np.pi, n),
        "background_a": background,
        "background_b": texture_colour,
        "foreground": _random_colours(rng, ~light_background),
        "noise_sigma": rng.uniform(0.0, 0.06, n),
        "texture_kind": rng.integers(0, 4, n),
        "texture_angle": rng.uniform(0.0, np.pi, n),
        "texture_freq": rng.uniform(1.5, 5.0, n),  # stripe cycles per image width
        "texture_phase": rng.uniform(0.0, 2 * np.pi, n),
        "texture_grid": rng.uniform(0.0, 1.0, (n, _NOISE_GRID, _NOISE_GRID)),
    }


def _textures(f: dict[str, np.ndarray], size: int, coords: np.ndarray) -> np.ndarray:
    """``[n, S, S]`` background texture in [0, 1]: flat, stripes, gradient or smooth noise."""
    angle = f["texture_angle"][:, None, None]
    x, y = coords[1][None] / size, coords[0][None] / size  # [1, S, S] in [0, 1]
    along = np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5)  # in [-0.71, 0.71]
    freq, phase = f["texture_freq"][:, None, None], f["texture_phase"][:, None, None]
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * along + phase)
    gradient = np.clip(along / 1.42 + 0.5, 0.0, 1.0)
    weights = _bilinear_weights(size, _NOISE_GRID)
    noise = np.einsum("hi,nij,wj->nhw", weights, f["texture_grid"], weights, optimize=True)
    kind = f["texture_kind"][:, None, None]
    texture = np.where(kind == 1, stripes, np.where(kind == 2, gradient, 0.0))
    return np.where(kind == 3, noise, texture).astype(np.float32)


def _draw(
    labels: np.ndarray, f: dict[str, np.ndarray], size: int, pixel_noise: np.ndarray
) -> np.ndarray:
    """Render ``[n, S, S, 3]`` uint8 images from labels, factors and ``[n, S, S, 3]`` noise."""
    n = len(labels)
    coords = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # [2, S, S] (y, x) pixel centres
    # Pixel centres in each shape's local frame: rotate by -rotation, divide by the radius.
    radius = f["radius"].astype(np.float32)[:, None, None]
    dx = coords[1][None] - f["cx"].astype(np.float32)[:, None, None]
    dy = coords[0][None] - f["cy"].astype(np.float32)[:, None, None]
    cos = np.cos(f["rotation"]).astype(np.float32)[:, None, None]
    sin = np.sin(f["rotation"]).astype(np.float32)[:, None, None]
    u, v = (cos * dx + sin * dy) / radius, (cos * dy - sin * dx) / radius
    coverage = np.empty((n, size, size), dtype=np.float32)
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        distance_px = _SDFS[label](u[rows], v[rows]) * radius[rows]
        coverage[rows] = np.clip(0.5 - distance_px, 0.0, 1.0)  # 1-px antialiased edge

    texture = _textures(f, size, coords)[..., None]
    a, b = f["background_a"][:, None, None], f["background_b"][:, None, None]
    alpha = coverage[..., None]
    image = (a + (b - a) * texture) * (1.0 - alpha) + f["foreground"][:, None, None] * alpha
    image += f["noise_sigma"][:, None, None, None] * pixel_noise
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def render_shapes(labels: np.ndarray, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw one random image per label.

    Args:
        labels: ``[n]`` integers in ``[0, len(SHAPES))``: the shape to draw.
        image_size: side ``S`` in pixels.
        rng: source of every nuisance factor.

    Returns:
        ``[n, S, S, 3]`` uint8 RGB images.
    """
    factors = _sample_factors(rng, len(labels), image_size)
    noise = rng.standard_normal((len(labels), image_size, image_size, 3), dtype=np.float32)
    return _draw(np.asarray(labels), factors, image_size, noise)


class SyntheticShapes(ArrayImageDataset):
    """Embedded demo dataset: ``num_classes`` shape classes under heavy nuisance variation.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` — disjoint random streams.
        num_samples: images in the split (default 10,000 for train, 2,000 otherwise); classes
            are balanced (label of image ``i`` is ``i % num_classes``).
        image_size: side in pixels (default 32).
        num_classes: how many of :data:`SHAPES` to use (the first ones), 2 to 10.
        seed: base seed; same seed and split → identical pixels.
        transform: applied to the PIL RGB image.

    Attributes: ``data`` (``[N, S, S, 3]`` uint8), ``targets``, ``classes``.
    """

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        image_size: int = 32,
        num_classes: int = len(SHAPES),
        seed: int = 0,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(
                f"synthetic split must be one of {sorted(_SPLIT_CODES)}, got {split!r}"
            )
        if num_samples is None:
            num_samples = _DEFAULT_NUM_SAMPLES[split]
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 8 <= image_size <= 1024:
            raise ValueError(f"image_size must be in [8, 1024], got {image_size}")
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"num_classes must be in [2, {len(SHAPES)}], got {num_classes}")
        self.split, self.seed, self.image_size = split, seed, image_size
        labels = np.arange(num_samples) % num_classes
        data = np.empty((num_samples, image_size, image_size, 3), dtype=np.uint8)
        for start in range(0, num_samples, BLOCK):
            stop = min(start + BLOCK, num_samples)
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], start // BLOCK])
            # Factors are drawn for a whole block and pixel noise last, row by row, so image i
            # does not depend on num_samples.
            factors = _sample_factors(rng, BLOCK, image_size)
            factors = {key: value[: stop - start] for key, value in factors.items()}
            noise = rng.standard_normal((stop - start, image_size, image_size, 3), np.float32)
            data[start:stop] = _draw(labels[start:stop], factors, image_size, noise)
        super().__init__(
            data, labels.tolist(), SHAPES[:num_classes], transform, name="SyntheticShapes"
        )

    def __repr__(self) -> str:
        return (
            f"SyntheticShapes(split={self.split!r}, num_samples={len(self)}, "
            f"image_size={self.image_size}, num_classes={len(self.classes)}, seed={self.seed})"
        )
