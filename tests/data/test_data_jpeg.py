"""JPEG files decoded where the views are rendered (``data.decode=device``): the same pixels as
the workers' PIL path (EXIF orientation included), other files left to PIL, bad files named, and
a run on a JPEG folder that renders and decodes in the training process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unimix.config import ConfigError
from unimix.data import build_dataset
from unimix.data.decode import UnreadableImageError, load_rgb
from unimix.data.jpeg import decode_jpegs, read_jpeg
from unimix.ssl.config import AugmentConfig, load_pretrain_config
from unimix.ssl.engine.loader import BatchPlan, MultiCropBatches, jpeg_folder, load_sources
from unimix.ssl.multicrop import MultiCropAugment


def _picture(seed: int = 0, size: tuple[int, int] = (45, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (10, 15, 3), dtype=np.uint8)).resize(size)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_decoded_jpegs_equal_pil_with_the_exif_orientation(tmp_path: Path, orientation) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    _picture().save(path, exif=exif.tobytes(), quality=90)
    expected = np.asarray(load_rgb(path))  # PIL, with ImageOps.exif_transpose
    encoded = read_jpeg(path)
    assert (encoded.height, encoded.width) == expected.shape[:2]
    got = decode_jpegs([encoded], "cpu")[0]
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), expected)


def test_other_files_are_left_to_pil_and_a_bad_jpeg_is_named(tmp_path: Path) -> None:
    _picture().save(tmp_path / "a.png")
    _picture().convert("CMYK").save(tmp_path / "b.jpg")
    assert read_jpeg(tmp_path / "a.png") is None and read_jpeg(tmp_path / "b.jpg") is None
    noise = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "c.jpg", quality=95)
    good = read_jpeg(tmp_path / "c.jpg")
    data = (tmp_path / "c.jpg").read_bytes()
    (tmp_path / "d.jpg").write_bytes(data[: len(data) * 4 // 5])  # cut in the image data
    bad = read_jpeg(tmp_path / "d.jpg")
    with pytest.raises(UnreadableImageError, match="d.jpg"):
        decode_jpegs([good, bad], "cpu")


def _jpeg_folder(root: Path) -> Path:
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            size = (32, 32) if i % 3 else (40, 28)  # two source sizes
            _picture(seed=10 * ord(c) + i, size=size).save(root / c / f"{i}.jpg", quality=92)
        _picture(seed=ord(c)).save(root / c / "x.png")  # decoded by the worker either way
    return root


def test_views_from_jpegs_decoded_in_the_training_process_equal_the_workers(
    tmp_path: Path,
) -> None:
    dataset = build_dataset(str(_jpeg_folder(tmp_path / "images")), "train")
    assert jpeg_folder(dataset)
    sources = load_sources(dataset, list(range(14)), jpeg=True)
    assert sum(isinstance(s, np.ndarray) for s in sources) == 2  # the PNGs
    aug = MultiCropAugment(AugmentConfig(global_size=16, local_size=8, num_local=2), seed=1)
    plan = BatchPlan(num_samples=14, batch_size=7, accum=1, world_size=1, rank=0, seed=1)
    for micro in range(3):
        workers = MultiCropBatches(dataset, plan, aug, total=3)[micro]
        batch = MultiCropBatches(dataset, plan, aug, total=3, render=False, jpeg=True)[micro]
        assert any(isinstance(group, list) for group in batch["views"].sources)
        here = aug.render(batch["views"].to("cpu"))
        for a, b in zip(workers["crops"], here, strict=True):
            assert torch.equal(a, b)  # libjpeg-turbo both ways on the CPU: the same pixels


def test_decode_device_needs_views_rendered_where_it_decodes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.decode"):
        load_pretrain_config("quickstart", ["data.decode=device", "augment.placement=loader"])
    with pytest.raises(ConfigError, match="data.decode"):
        load_pretrain_config("quickstart", ["data.decode=device", "data.cache=true"])
    import unimix

    out = tmp_path / "run"
    cfg = load_pretrain_config(
        "quickstart", ["data.decode=device", "augment.placement=device", f"output_dir={out}"]
    )
    with pytest.raises(ValueError, match="data.decode=device: reads the JPEG files"):
        unimix.pretrain(cfg)  # the synthetic set has no files
    assert not out.exists() or not any(out.iterdir())  # refused before anything was written


def test_a_run_decodes_a_jpeg_folder_in_the_training_process(tmp_path: Path) -> None:
    import json

    import unimix

    root = _jpeg_folder(tmp_path / "images")
    tiny = [
        f"data.dataset={root}",
        "data.batch_size=6",
        "data.num_workers=1",
        "data.cache=false",
        "data.decode=device",
        "augment.placement=device",
        "augment.global_size=16",
        "augment.local_size=8",
        "augment.num_local=1",
        "model.backbone=vit_tiny_patch16_224",
        "model.backbone_kwargs={img_size: 16, patch_size: 4, embed_dim: 16, depth: 1,"
        " num_heads: 2, mlp_ratio: 2, dynamic_img_size: true}",
        "model.head={out_dim: 32, hidden_dim: 16, bottleneck_dim: 8}",
        "optim.warmup_epochs=0",
        "epochs=2",
        "max_steps=3",
        "threads=1",
        "checkpoint.every_steps=0",
        "logging.progress_bar=false",
        "eval.knn_at_end=false",
        "eval.knn_every_epochs=0",
        f"output_dir={tmp_path / 'run'}",
    ]
    result = unimix.pretrain(load_pretrain_config("folder", tiny))
    assert result.steps == 3 and all(np.isfinite(result.losses))
    start = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["views_rendered_by"] == "training process"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_jpegs_decoded_on_cuda_are_close_to_the_cpu(tmp_path: Path) -> None:
    files = []
    for i in range(4):
        _picture(seed=i, size=(96 + 8 * i, 64)).save(tmp_path / f"{i}.jpg", quality=90)
        files.append(read_jpeg(tmp_path / f"{i}.jpg"))
    cpu = decode_jpegs(files, "cpu")
    gpu = decode_jpegs(files, "cuda")
    for a, b in zip(cpu, gpu, strict=True):
        diff = (a.int() - b.cpu().int()).abs()
        assert a.shape == b.shape and diff.float().mean() < 1.0 and diff.max() <= 8
