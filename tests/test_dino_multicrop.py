"""Multi-crop views: reproducible per sample, and each photometric op equal to torchvision's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from unimix.ssl import multicrop
from unimix.ssl.config import AugmentConfig
from unimix.ssl.loader import BatchPlan
from unimix.ssl.multicrop import MultiCropAugment


def _images(n: int, size: int = 24) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_views_depend_only_on_seed_epoch_and_index() -> None:
    cfg = AugmentConfig(global_size=16, local_size=8, num_local=3)
    aug = MultiCropAugment(cfg, seed=3)
    images = _images(6)
    full = aug(images, list(range(6)), epoch=1)
    part = aug([images[4], images[1]], [4, 1], epoch=1)
    assert [tuple(v.shape) for v in full] == [(12, 3, 16, 16), (18, 3, 8, 8)]
    for group_full, group_part, views in zip(full, part, (2, 3), strict=True):
        for v in range(views):  # view-major rows: v * n + j
            torch.testing.assert_close(group_part[v * 2 + 0], group_full[v * 6 + 4], rtol=0, atol=0)
            torch.testing.assert_close(group_part[v * 2 + 1], group_full[v * 6 + 1], rtol=0, atol=0)
    other_epoch = aug(images, list(range(6)), epoch=2)
    assert not torch.equal(other_epoch[0], full[0])


def test_full_image_crop_without_photometric_ops_is_the_normalised_image() -> None:
    cfg = AugmentConfig(
        global_size=24, local_size=8, num_local=1, global_scale=(1.0, 1.0), flip_p=0.0,
        jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0, 0.0), solarize_p=0.0,
    )  # fmt: skip
    aug = MultiCropAugment(cfg, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = _images(3)
    globals_, locals_ = aug(images, [0, 1, 2], epoch=0)
    expected = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images])
    torch.testing.assert_close(globals_[:3] * 0.25 + 0.5, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(globals_[3:] * 0.25 + 0.5, expected, atol=1e-5, rtol=0)
    assert locals_.shape == (3, 3, 8, 8)


@pytest.mark.parametrize(
    ("op", "factor", "reference"),
    [
        (0, 1.3, TF.adjust_brightness),
        (1, 0.7, TF.adjust_contrast),
        (2, 1.2, TF.adjust_saturation),
        (3, 0.08, TF.adjust_hue),
        (3, -0.1, TF.adjust_hue),
    ],
)
def test_colour_jitter_ops_match_torchvision(op: int, factor: float, reference) -> None:
    x = torch.rand(3, 3, 10, 10)
    factors = torch.tensor([[1.0, 1.0, 1.0, 0.0]]).repeat(3, 1)
    factors[:, op] = factor
    order = torch.tensor([[op] + [k for k in range(4) if k != op]]).repeat(3, 1)
    ours = multicrop._color_jitter(x, factors, order)
    expected = torch.stack([reference(img, factor) for img in x])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_blur_and_grayscale_match_torchvision() -> None:
    x = torch.rand(2, 3, 20, 20)
    sigma = torch.tensor([0.7, 0.0])
    ours = multicrop._gaussian_blur(x, sigma, max_sigma=1.0)
    expected = TF.gaussian_blur(x[0], kernel_size=[7, 7], sigma=[0.7, 0.7])  # radius ceil(3·1.0)
    torch.testing.assert_close(ours[0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], x[1])  # σ = 0: untouched
    gray = multicrop._grayscale(x)
    torch.testing.assert_close(gray, TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)


def test_batch_plan_splits_the_global_batch_identically_for_any_process_count() -> None:
    one = BatchPlan(num_samples=50, batch_size=12, accum=2, world_size=1, rank=0, seed=0)
    two = [BatchPlan(50, 12, 1, 2, rank, 0) for rank in (0, 1)]
    assert one.steps_per_epoch == 4
    for step in range(6):  # crosses an epoch boundary
        epoch_a, a0 = one.indices(2 * step)
        _, a1 = one.indices(2 * step + 1)
        epoch_b, b0 = two[0].indices(step)
        _, b1 = two[1].indices(step)
        assert epoch_a == epoch_b == step // 4
        assert np.array_equal(np.concatenate([a0, a1]), np.concatenate([b0, b1]))
    # every image at most once per epoch
    seen = np.concatenate([one.indices(m)[1] for m in range(8)])
    assert len(set(seen.tolist())) == 48
