"""unimix.data.synthetic: deterministic shapes, their geometry, and a weak raw-pixel baseline."""

from __future__ import annotations

import numpy as np
import torch

from unimix.data import SyntheticShapes
from unimix.data.synthetic import _draw, _sample_factors


def test_synthetic_is_deterministic_and_splits_differ() -> None:
    a = SyntheticShapes("train", 600, image_size=24, seed=1)
    b = SyntheticShapes("train", 600, image_size=24, seed=1)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.data.shape == (600, 24, 24, 3) and a.data.dtype == np.uint8
    assert not np.array_equal(a.data, SyntheticShapes("train", 600, image_size=24, seed=2).data)
    assert not np.array_equal(a.data, SyntheticShapes("test", 600, image_size=24, seed=1).data)
    # Image i does not depend on how many images are requested (blocks are seeded separately).
    np.testing.assert_array_equal(
        SyntheticShapes("train", 37, image_size=24, seed=1).data, a.data[:37]
    )
    assert a.targets == [i % 10 for i in range(600)] and a.classes[0] == "circle"
    image, label = a[13]
    assert image.mode == "RGB" and image.size == (24, 24) and label == 3


def test_synthetic_shapes_have_their_geometric_area() -> None:
    """A white circle / square on black, no nuisances: pixel area ≈ the analytic area."""
    size, radius = 64, 20.0
    factors = _sample_factors(np.random.default_rng(0), 2, size)
    factors.update(
        radius=np.full(2, radius),
        cx=np.full(2, 32.0),
        cy=np.full(2, 32.0),
        rotation=np.zeros(2),
        background_a=np.zeros((2, 3)),
        background_b=np.zeros((2, 3)),
        foreground=np.ones((2, 3)),
        noise_sigma=np.zeros(2),
    )
    images = _draw(np.array([0, 1]), factors, size, np.zeros((2, size, size, 3), np.float32))
    area = images[..., 0].astype(np.float64).sum(axis=(1, 2)) / 255.0
    circle, square = np.pi * radius**2, (2 * 0.82 * radius) ** 2
    np.testing.assert_allclose(area, [circle, square], rtol=0.01)


def test_synthetic_raw_pixels_are_a_weak_baseline() -> None:
    """Nuisances must dominate raw pixels: cosine k-NN (k=20) on them stays far from 100%."""
    train, test = SyntheticShapes("train", 2000), SyntheticShapes("test", 500)

    def features(d: SyntheticShapes) -> torch.Tensor:
        x = torch.from_numpy(d.data).float().flatten(1)
        return torch.nn.functional.normalize(x - x.mean(1, keepdim=True), dim=1)

    similarity = features(test) @ features(train).T
    neighbours = similarity.topk(20, dim=1).indices
    votes = torch.tensor(train.targets)[neighbours]
    predictions = torch.mode(votes, dim=1).values
    accuracy = (predictions == torch.tensor(test.targets)).float().mean().item()
    assert 0.1 < accuracy < 0.6, accuracy
