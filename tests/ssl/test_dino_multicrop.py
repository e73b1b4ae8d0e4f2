"""Multi-crop views: reproducible per sample, and each photometric op equal to torchvision's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from unimix.ssl import photometric
from unimix.ssl.config import AugmentConfig
from unimix.ssl.engine.loader import BatchPlan
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
        global_size=24,
        local_size=8,
        num_local=1,
        global_scale=(1.0, 1.0),
        flip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=(0.0, 0.0, 0.0),
        solarize_p=0.0,
    )
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
    ours = photometric.color_jitter(x, factors, order)
    expected = torch.stack([reference(img, factor) for img in x])
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_blur_and_grayscale_match_torchvision() -> None:
    x = torch.rand(2, 3, 20, 20)
    sigma = torch.tensor([0.7, 0.0])
    ours = photometric.gaussian_blur(x, sigma, max_sigma=1.0)
    expected = TF.gaussian_blur(x[0], kernel_size=[7, 7], sigma=[0.7, 0.7])  # radius ceil(3·1.0)
    torch.testing.assert_close(ours[0], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[1], x[1])  # σ = 0: untouched
    gray = photometric.grayscale(x)
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


# ------------------------------------------------------------------ where the views are rendered
def _loader_items(render: bool, num_workers: int, micro: range) -> list[dict]:
    """Micro-batches of a varied-size dataset through the real DataLoader (workers when
    ``num_workers``), rendered in the workers (``render``) or in this process on the CPU."""
    from unimix.ssl.engine.loader import MultiCropBatches, make_loader, render_on

    rng = np.random.default_rng(1)
    sizes = [(24, 24), (24, 24), (30, 20), (24, 24), (16, 40)] * 4  # 20 images, 3 source sizes
    dataset = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in sizes]
    cfg = AugmentConfig(global_size=16, local_size=8, num_local=3)
    aug = MultiCropAugment(cfg, seed=5)
    plan = BatchPlan(num_samples=20, batch_size=6, accum=1, world_size=1, rank=0, seed=5)
    batches = MultiCropBatches(dataset, plan, aug, total=micro.stop, render=render)
    items = iter(make_loader(batches, micro.start, num_workers, seed=5))
    if not render:
        items = render_on(items, aug, torch.device("cpu"))
    return list(items)


def test_views_rendered_in_the_training_process_equal_the_workers_bit_for_bit() -> None:
    # The reference is the path every run took so far: workers render the views. Rendering in
    # the training process (what augment.placement=device does on CPU) must give the same bits,
    # over an epoch boundary (3 steps per epoch) and with sources of several sizes.
    workers = _loader_items(render=True, num_workers=1, micro=range(1, 5))
    here = _loader_items(render=False, num_workers=1, micro=range(1, 5))
    inline = _loader_items(render=False, num_workers=0, micro=range(1, 5))
    assert len(workers) == len(here) == len(inline) == 4
    for a, b, c in zip(workers, here, inline, strict=True):
        assert torch.equal(a["indices"], b["indices"]) and torch.equal(a["indices"], c["indices"])
        assert [v.shape for v in a["crops"]] == [(12, 3, 16, 16), (18, 3, 8, 8)]
        for va, vb, vc in zip(a["crops"], b["crops"], c["crops"], strict=True):
            assert torch.equal(va, vb) and torch.equal(va, vc)


def test_crop_batch_holds_uint8_sources_and_moves_whole() -> None:
    cfg = AugmentConfig(global_size=16, local_size=8, num_local=2)
    aug = MultiCropAugment(cfg, seed=0)
    images = _images(5) + [np.zeros((10, 30, 3), np.uint8)]
    batch = aug.prepare(images, list(range(6)), epoch=0)
    assert [s.dtype for s in batch.sources] == [torch.uint8, torch.uint8]
    assert sorted(len(r) for r in batch.rows) == [1, 5] and len(batch.views) == 4
    moved = batch.to("cpu")
    assert moved is not batch and torch.equal(moved.sources[0], batch.sources[0])
    for got, expected in zip(aug.render(moved), aug(images, list(range(6)), 0), strict=True):
        assert torch.equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_views_rendered_on_cuda_match_the_cpu() -> None:
    cfg = AugmentConfig(global_size=32, local_size=16, num_local=4)
    aug = MultiCropAugment(cfg, seed=2)
    images = _images(16, size=40)
    batch = aug.prepare(images, list(range(16)), epoch=1)
    cpu = aug.render(batch)
    gpu = aug.render(batch.pin_memory().to("cuda", non_blocking=True))
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(b.cpu(), a, atol=1e-4, rtol=0)


def test_a_run_trains_the_same_with_views_rendered_in_workers_or_in_the_training_process(
    tmp_path,
) -> None:
    import unimix
    from unimix.ssl import load_pretrain_config

    tiny = [
        "data.dataset=synthetic",
        "data.num_samples=32",
        "data.image_size=16",
        "data.batch_size=8",
        "data.num_workers=1",
        "augment.global_size=16",
        "augment.local_size=8",
        "augment.num_local=2",
        "model.backbone=vit_tiny_patch16_224",
        "model.backbone_kwargs={img_size: 16, patch_size: 4, embed_dim: 16, depth: 1,"
        " num_heads: 2, mlp_ratio: 2, dynamic_img_size: true}",
        "model.head={out_dim: 32, hidden_dim: 16, bottleneck_dim: 8}",
        "optim.warmup_epochs=0",
        "epochs=2",
        "max_steps=5",
        "threads=1",
        "checkpoint.every_steps=0",
        "logging.progress_bar=false",
        "eval.knn_at_end=false",
    ]
    results = {}
    for placement in ("loader", "device"):
        out = tmp_path / placement
        cfg = load_pretrain_config(
            None, [*tiny, f"augment.placement={placement}", f"output_dir={out}"]
        )
        results[placement] = unimix.pretrain(cfg)
    loader, device = results["loader"], results["device"]
    assert loader.steps == device.steps == 5
    assert loader.losses == device.losses  # exactly: same views, same arithmetic
    for placement, by in (("loader", "loader workers"), ("device", "training process")):
        lines = (tmp_path / placement / "metrics.jsonl").read_text().splitlines()
        start = next(json.loads(line) for line in lines if '"start"' in line)
        assert start["views_rendered_by"] == by


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rendering_on_cuda_never_waits_for_the_gpu() -> None:
    # Every host-side decision is made in prepare: render only queues kernels. A copy from the
    # host (an index, a constant) or a read-back would make the CPU wait for the GPU's queue.
    cfg = AugmentConfig(global_size=32, local_size=16, num_local=4)
    aug = MultiCropAugment(cfg, seed=2)
    images = _images(16, size=40) + [np.zeros((30, 50, 3), np.uint8)]
    batch = aug.prepare(images, list(range(17)), epoch=1).pin_memory()
    aug.render(batch.to("cuda", non_blocking=True))  # first call: constants moved once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        views = aug.render(batch.to("cuda", non_blocking=True))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert views[0].is_cuda and views[1].shape == (4 * 17, 3, 16, 16)
