"""WebDataset shards: the converter against its source folder (read back with ``tarfile``), the
per-(seed, epoch) order, the split over processes and readers, and a pretraining run that
streams shards, checkpoints and resumes at a shard boundary."""

from __future__ import annotations

import json
import os
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from unimix.cli import SUBCOMMANDS
from unimix.data import ShardDataset, UnreadableImageWarning, build_dataset, list_image_files
from unimix.data.shards import ShardSet, iter_shard_samples, reader_shards, shuffle_buffer
from unimix.data.shards_cli import build_parser
from unimix.data.shards_cli import main as shards_main
from unimix.ssl.engine.loader import BatchPlan
from unimix.ssl.engine.shard_loader import ShardBatches, make_stream_loader, stream_plan

CLASSES = ("ant", "bee", "cat")
PATTERN = "shard-{000000..000003}.tar"


def _tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    """Reference reader: ``{key: {ext: bytes}}`` of a tar, with the standard library only."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            key, ext = member.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return out


@pytest.fixture
def shards(tiny_image_folder, tmp_path: Path) -> Path:
    """32 images (3 classes of 11, 11, 10) in 4 shards of 9, 9, 9, 5: ``<tmp>/shards``."""
    root = tiny_image_folder(CLASSES, per_class=11, size=16, name="src")
    os.remove(root / "cat" / "cat_10.png")
    assert shards_main([str(root), str(tmp_path / "shards"), "--shard-size", "9"]) == 0
    return tmp_path / "shards"


def test_converter_keeps_every_image_once_with_its_label_and_bytes(shards: Path) -> None:
    src = shards.parent / "src"
    expected = Counter(
        (Path(f).read_bytes(), CLASSES.index(Path(f).parent.name)) for f in list_image_files(src)
    )
    index = json.loads((shards / "shards.json").read_text())
    got: Counter = Counter()
    for name, count in index["shards"].items():
        samples = _tar_samples(shards / name)
        assert len(samples) == count
        got.update((s["png"], int(s["cls"])) for s in samples.values())
    assert got == expected and sum(got.values()) == 32
    assert index["classes"] == list(CLASSES)
    assert sorted(index["shards"]) == [f"shard-{i:06d}.tar" for i in range(4)]
    assert str(shards.parent) not in (shards / "shards.json").read_text()  # relative names only


def test_converter_flat_folder_errors_and_help(tiny_image_folder, tmp_path, capsys) -> None:
    flat = tiny_image_folder(None, per_class=5, name="flat")
    assert shards_main([str(flat), str(tmp_path / "flat_shards"), "--prefix", "f"]) == 0
    samples = _tar_samples(tmp_path / "flat_shards" / "f-000000.tar")
    assert len(samples) == 5 and all(set(s) == {"png"} for s in samples.values())  # no labels
    for argv in (
        [str(tmp_path / "missing"), str(tmp_path / "o")],
        [str(flat), "o2", "--shard-size", "0"],
    ):
        capsys.readouterr()
        assert shards_main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert all(a.help for a in build_parser()._actions)
    assert SUBCOMMANDS["shards"][0] == "unimix.data.shards_cli"  # `unimix shards`


def test_shard_specs_counts_and_indices(shards: Path) -> None:
    by_pattern = build_dataset(str(shards / PATTERN))
    assert isinstance(by_pattern, ShardDataset) and len(by_pattern) == 32
    assert len(build_dataset(str(shards))) == 32  # a folder of .tar files
    assert len(build_dataset(str(shards / "shard-000003.tar"))) == 5
    assert by_pattern.classes == list(CLASSES)
    indexed = ShardSet.open(shards)
    (shards / "shards.json").unlink()
    assert ShardSet.open(shards).counts == indexed.counts == (9, 9, 9, 5)  # from tar headers
    # global index = the converter's key = position in the written (shuffled) order
    for sample in iter_shard_samples(indexed, range(4)):
        assert sample.index == int(sample.name.split(":")[1].split(".")[0])
    with pytest.raises(FileNotFoundError, match="shard-000004.tar not found .4 of 8"):
        ShardSet.open(shards / "shard-{000000..000007}.tar")
    assert [label for _, label in by_pattern].count(2) == 10


def test_unreadable_images_are_skipped_and_counted(tiny_image_folder, tmp_path: Path) -> None:
    from webdataset import TarWriter

    root = tiny_image_folder(("a",), per_class=4, name="bad")
    (tmp_path / "s").mkdir()
    # written by another tool (unimix shards checks every image): member 1 is not an image
    with TarWriter(str(tmp_path / "s" / "shard-000000.tar"), encoder=False) as tar:
        for i, file in enumerate(sorted((root / "a").iterdir())):
            data = b"not an image" if i == 1 else file.read_bytes()
            tar.write({"__key__": f"{i:09d}", "png": data, "cls": b"0"})
    dataset = build_dataset(str(tmp_path / "s"))
    with pytest.warns(UnreadableImageWarning, match="shard-000000.tar:000000001.png"):
        labels = [label for _, label in dataset]
    assert labels == [0, 0, 0] and dataset.num_skipped == 1
    # training: 2 steps of 2 need 4 readable images of the 3; the reader reads its shard again
    plan = stream_plan(dataset, BatchPlan(len(dataset), 2, 1, 1, 0, 0), 0)
    stream = ShardBatches(dataset.shards, plan, _no_views, 0, 2, dataset.skipped)
    with pytest.warns(UnreadableImageWarning):
        batches = [b["indices"].tolist() for b in make_stream_loader(stream, 0)]
    assert len(batches) == 2 and 1 not in sum(batches, []) and dataset.num_skipped >= 2
    with pytest.warns(UnreadableImageWarning, match=r"skipped \d+ unreadable images in the shards"):
        dataset._finalizer()  # what runs when the dataset dies or the program exits


def test_shuffle_buffer_is_bounded_deterministic_and_complete() -> None:
    items = list(range(100))
    out = list(shuffle_buffer(items, 8, np.random.default_rng(3)))
    assert sorted(out) == items and out != items
    assert out == list(shuffle_buffer(items, 8, np.random.default_rng(3)))
    assert all(item <= position + 8 for position, item in enumerate(out))  # never reads ahead


@pytest.mark.parametrize("num_shards", [4, 7, 10])
def test_shards_are_dealt_disjointly_and_completely(num_shards: int) -> None:
    for world in (1, 2, 3):
        for readers in (1, 2):
            if num_shards < world * readers:
                continue
            dealt = [
                reader_shards(num_shards, 5, 1, rank, world, reader, readers)
                for rank in range(world)
                for reader in range(readers)
            ]
            flat = [s for part in dealt for s in part]
            assert sorted(flat) == list(range(num_shards))
            assert {len(p) for p in dealt} <= {
                num_shards // (world * readers),
                -(-num_shards // (world * readers)),
            }
    assert reader_shards(10, 5, 1) != reader_shards(10, 5, 2)


class _NoViews:
    """An augmentation that checks the images it gets and draws no views (the multi-crop's
    prepare / render halves, :mod:`unimix.ssl.multicrop`)."""

    def prepare(self, images: list[np.ndarray], indices: list[int], epoch: int) -> int:
        assert all(image.shape[2] == 3 and image.dtype == np.uint8 for image in images)
        return len(images)

    def render(self, count: int) -> list[torch.Tensor]:
        return [torch.zeros(count)]


_no_views = _NoViews()


def _batches(shards: Path, *, world=1, rank=0, workers=0, epochs=2, batch=8, start=0) -> list:
    """Sample indices of each micro-batch from ``start`` to the end of ``epochs`` epochs."""
    dataset = build_dataset(str(shards / PATTERN), buffer_size=6)
    plan = stream_plan(dataset, BatchPlan(len(dataset), batch, 1, world, rank, 7), workers)
    stream = ShardBatches(dataset.shards, plan, _no_views, start, plan.steps_per_epoch * epochs)
    return [b["indices"].tolist() for b in make_stream_loader(stream, workers)]


def _indices(shards: Path, *, epochs: int = 2, **options) -> list[list[int]]:
    """Sample indices of every micro-batch of ``epochs`` epochs, per epoch."""
    order = _batches(shards, epochs=epochs, **options)
    per = len(order) // epochs
    return [sum(order[e * per : (e + 1) * per], []) for e in range(epochs)]


def test_sample_order_is_a_function_of_seed_and_epoch(shards: Path) -> None:
    first, second = _indices(shards)
    assert first == _indices(shards)[0]
    assert sorted(first) == sorted(second) == list(range(32))  # every sample once per epoch
    assert first != second


def test_ranks_read_disjoint_shards_and_take_the_same_steps(shards: Path) -> None:
    # 4 shards of 9, 9, 9, 5 over 2 processes: each reads 2 shards; the smallest pair holds 14
    # images, so an epoch is 14 // 4 = 3 steps of 2 × 4 on every rank, whichever shards it gets.
    ranks = [_indices(shards, world=2, rank=r, batch=8, epochs=3) for r in (0, 1)]
    sizes = json.loads((shards / "shards.json").read_text())["shards"]
    offsets = np.cumsum([0, *sizes.values()])
    for epoch in range(3):
        a, b = ranks[0][epoch], ranks[1][epoch]
        assert len(a) == len(b) == 12 and not set(a) & set(b)
        shards_of = [set(np.searchsorted(offsets, x, side="right") - 1 for x in r) for r in (a, b)]
        assert not shards_of[0] & shards_of[1]  # disjoint shards, not only samples
    with pytest.raises(ValueError, match="4 shard"):
        _indices(shards, world=8)


@pytest.mark.slow
def test_two_workers_read_their_own_shards_in_turn(shards: Path) -> None:
    # 2 DataLoader workers = 2 readers of 2 shards each; the smallest pair holds 14 images, so
    # an epoch is 14 // 8 = 1 batch per reader, 2 steps. Batch g comes from reader g mod 2.
    epochs = _indices(shards, workers=2, epochs=3, batch=8)
    offsets = np.cumsum([0, 9, 9, 9, 5])
    for epoch, order in enumerate(epochs):
        assert len(order) == 16 == len(set(order))
        for g in range(2):
            shards_read = set(np.searchsorted(offsets, order[8 * g : 8 * g + 8], side="right") - 1)
            assert shards_read <= set(reader_shards(4, 7, epoch, 0, 1, g, 2)), (epoch, g)
    assert _indices(shards, workers=2, epochs=3, batch=8) == epochs
    # resumed at micro-batch 3 (reader 1's first of epoch 1: nothing to re-read), worker 0 now
    # serves reader 1: the stream is the uninterrupted one from there on
    whole = _batches(shards, workers=2, epochs=3)
    assert _batches(shards, workers=2, epochs=3, start=3) == whole[3:]


TINY = {
    "data": {"batch_size": 8, "num_workers": 0},
    "augment": {"global_size": 16, "local_size": 8, "num_local": 0},
    "model": {
        "backbone": "vit_tiny_patch16_224",
        "backbone_kwargs": {
            "img_size": 16,
            "patch_size": 8,
            "embed_dim": 16,
            "depth": 1,
            "num_heads": 2,
            "mlp_ratio": 2,
            "dynamic_img_size": True,
        },
        "head": {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8},
    },
    "optim": {"warmup_epochs": 1, "base_lr": 0.005},
    "dino": {"freeze_last_layer_epochs": 0.5},
    "epochs": 2,
    "threads": 1,
    "checkpoint": {"every_steps": 3, "keep_last": 2},
    "logging": {"every_steps": 1, "progress_bar": False},
}


@pytest.mark.slow
def test_pretrain_streams_shards_and_resumes_at_a_shard(shards: Path, tmp_path, capsys) -> None:
    from unimix.ssl.pretrain_cli import main

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "run"
    args = ["-c", str(config), "-o", str(out), f"data.dataset={shards / PATTERN}"]
    assert main([*args, "max_steps=5"]) == 0
    assert "32 images" in capsys.readouterr().out
    assert main([*args, "--resume", "auto"]) == 0
    printed = capsys.readouterr().out
    # 32 images, batch 8: 4 steps per epoch; step 5 is inside epoch 1, 8 images into it: the
    # restart shard is the first of epoch 1's order whose shards up to it hold more than 8.
    held = np.cumsum([(9, 9, 9, 5)[s] for s in reader_shards(4, 0, 1)])
    shard = int(np.argmax(held > 8)) + 1
    line = f"resume: streaming shards restart at shard {shard} of 4 of epoch 1"
    assert line in printed, printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 9)) and all(
        np.isfinite(r["loss"]) for r in records if "loss" in r
    )
    assert (out / "checkpoints" / "step_00000008").is_dir()
