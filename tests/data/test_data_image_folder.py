"""unimix.data.image_folder: ImageFolder trees and flat folders, bad files, cache, pickling."""

from __future__ import annotations

import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader

from unimix.data import (
    ImageFolderDataset,
    UnreadableImageError,
    UnreadableImageWarning,
    build_dataset,
)

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


# --------------------------------------------------------------------------- real data
@pytest.mark.data
def test_cifar10_test_folder_matches_imagefolder_order(cifar10_root: Path) -> None:
    dataset = build_dataset(cifar10_root, "test")
    assert len(dataset) == 10_000
    assert dataset.classes == CIFAR10_CLASSES
    assert np.bincount(dataset.targets).tolist() == [1000] * 10
    # Independent reference: torchvision's ImageFolder on the same tree.
    reference = torchvision.datasets.ImageFolder(str(cifar10_root / "test"))
    assert dataset.classes == reference.classes
    assert dataset.files == [path for path, _ in reference.samples]
    assert dataset.targets == reference.targets
    image, label = dataset[9_999]
    assert (image.mode, image.size, label) == ("RGB", (32, 32), 9)
    with Image.open(reference.samples[9_999][0]) as raw:
        np.testing.assert_array_equal(np.asarray(image), np.asarray(raw.convert("RGB")))


# ------------------------------------------------------------------------- bad files
def _plant_bad_files(root: Path) -> tuple[Path, Path]:
    """Add a non-image and a truncated JPEG to an ImageFolder tree; return their paths."""
    corrupt = root / "cat" / "cat_9_corrupt.jpg"
    corrupt.write_bytes(b"this is not an image" * 10)
    truncated = root / "dog" / "dog_9_truncated.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(truncated)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return corrupt, truncated


def test_bad_files_are_skipped_with_a_warning_naming_them(tiny_image_folder) -> None:
    root = tiny_image_folder(("cat", "dog"), 2)
    corrupt, truncated = _plant_bad_files(root)
    dataset = build_dataset(root)
    files = dataset.files
    assert len(dataset) == 6
    with pytest.warns(UnreadableImageWarning) as record:
        items = [dataset[i] for i in range(len(dataset))]
    messages = [str(w.message) for w in record]
    assert any(str(corrupt) in m for m in messages), messages
    assert any(str(truncated) in m for m in messages), messages
    assert dataset.num_skipped == 2
    assert dataset.skipped_files == [str(corrupt), str(truncated)]
    # Each bad item is replaced by the next readable one (cyclically), label included.
    for i, (image, label) in enumerate(items):
        served = i if files[i] not in dataset.skipped_files else (i + 1) % len(files)
        assert label == dataset.targets[served]
        expected = np.asarray(Image.open(files[served]).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(image), expected)
    with warnings.catch_warnings():  # known bad files are not re-decoded nor re-warned
        warnings.simplefilter("error")
        dataset[files.index(str(corrupt))]
    with pytest.warns(UnreadableImageWarning, match=r"2 of 6 images .* were skipped"):
        assert dataset.report_skipped() == 2
    with warnings.catch_warnings():  # nothing new to report
        warnings.simplefilter("error")
        assert dataset.report_skipped() == 2


def test_a_run_ends_with_the_count_of_skipped_files(tiny_image_folder) -> None:
    """Without an explicit report_skipped(), the summary is printed when the program exits."""
    root = tiny_image_folder(("cat", "dog"), 2)
    corrupt, _ = _plant_bad_files(root)
    script = (
        "import warnings, unimix.data as d\n"
        "warnings.simplefilter('ignore', d.UnreadableImageWarning)\n"
        f"ds = d.build_dataset({str(root)!r})\n"
        f"ds[ds.files.index({str(corrupt)!r})]\n"
        "warnings.resetwarnings()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "1 of 6 images" in result.stderr and str(corrupt) in result.stderr, result.stderr


def test_strict_raises_naming_the_file(tiny_image_folder) -> None:
    root = tiny_image_folder(("cat", "dog"), 1)
    corrupt, truncated = _plant_bad_files(root)
    dataset = build_dataset(root, strict=True)
    with pytest.raises(UnreadableImageError, match=re.escape(str(corrupt))):
        dataset[dataset.files.index(str(corrupt))]
    with pytest.raises(UnreadableImageError, match=re.escape(str(truncated))):
        dataset[dataset.files.index(str(truncated))]
    with pytest.raises(UnreadableImageError, match=re.escape(str(corrupt))):
        build_dataset(root, strict=True, cache=True)


def test_skips_in_dataloader_workers_reach_the_main_process(tiny_image_folder) -> None:
    root = tiny_image_folder(("cat", "dog"), 3)
    _plant_bad_files(root)
    dataset = build_dataset(root, transform=lambda im: torch.from_numpy(np.asarray(im).copy()))
    loader = DataLoader(dataset, batch_size=2, num_workers=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadableImageWarning)
        labels = torch.cat([y for _, y in loader])
    assert len(labels) == 8
    assert dataset.num_skipped == 2
    with pytest.warns(UnreadableImageWarning, match="2 of 8 images"):
        dataset.report_skipped()


def test_cache_drops_bad_files_and_serves_the_same_pixels(tiny_image_folder) -> None:
    root = tiny_image_folder(("cat", "dog"), 2)
    corrupt, truncated = _plant_bad_files(root)
    lazy = build_dataset(root)
    with pytest.warns(UnreadableImageWarning) as record:
        cached = build_dataset(root, cache=True)
    messages = "\n".join(str(w.message) for w in record)
    assert str(corrupt) in messages and str(truncated) in messages
    assert "2 of 6 images" in messages
    assert len(cached) == 4 and str(corrupt) not in cached.files
    for i, path in enumerate(cached.files):
        j = lazy.files.index(path)
        np.testing.assert_array_equal(cached.get_uint8(i), lazy.get_uint8(j))
        assert cached[i][1] == lazy.targets[j]


def test_dataset_pickles_for_spawned_workers(tiny_image_folder) -> None:
    dataset = build_dataset(tiny_image_folder())
    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone.get_uint8(3), dataset.get_uint8(3))


# --------------------------------------------------------------------- folder layouts
def test_tree_labels_match_torchvision_imagefolder(tiny_image_folder) -> None:
    root = tiny_image_folder(("zebra", "ant", "moth"), 2, suffix=".JPG")
    dataset = build_dataset(root, transform=torchvision.transforms.functional.pil_to_tensor)
    reference = torchvision.datasets.ImageFolder(str(root))
    assert dataset.classes == reference.classes == ["ant", "moth", "zebra"]
    assert dataset.targets == reference.targets
    assert dataset.files == [p for p, _ in reference.samples]
    image, label = dataset[5]
    assert image.shape == (3, 8, 8) and image.dtype == torch.uint8 and label == 2


def test_flat_folder_is_unlabeled(tiny_image_folder) -> None:
    root = tiny_image_folder(None, 4)
    (root / "notes.txt").write_text("not an image")
    (root / "._img_0.png").write_bytes(b"macOS resource fork")
    dataset = build_dataset(root)
    assert len(dataset) == 4 and dataset.classes == [] and dataset.targets == [-1] * 4
    assert dataset[0][1] == -1


def test_split_subfolder_is_used_when_present(tiny_image_folder, tmp_path: Path) -> None:
    tiny_image_folder(("a", "b"), 2, name="splits/train")
    tiny_image_folder(("a", "b"), 1, name="splits/test")
    assert len(build_dataset(tmp_path / "splits", "train")) == 4
    assert len(build_dataset(tmp_path / "splits", "test")) == 2
    no_splits = tiny_image_folder(("a", "b"), 3)
    assert len(build_dataset(no_splits, "test")) == 6  # no test/ → the folder itself


def test_unlabeled_mode_takes_images_recursively(tiny_image_folder) -> None:
    root = tiny_image_folder(("a", "b"), 2)
    dataset = build_dataset(root, labeled=False)
    assert len(dataset) == 4 and set(dataset.targets) == {-1}


def test_empty_and_malformed_folders_give_errors_naming_the_path(
    tiny_image_folder, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"no images .* in {re.escape(str(empty))}$"):
        build_dataset(empty)
    root = tiny_image_folder(("cat", "dog"), 1)
    (root / "fish").mkdir()
    (root / "fish" / "readme.txt").write_text("no pictures here")
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"class folder {root / 'fish'} contains no images")
    ):
        build_dataset(root)
    mixed = tiny_image_folder(("cat",), 1)
    Image.new("RGB", (4, 4)).save(mixed / "stray.png")
    with pytest.raises(ValueError, match=re.escape(f"{mixed} has both class folders")):
        build_dataset(mixed)
    with pytest.raises(NotADirectoryError, match="stray.png"):
        ImageFolderDataset(mixed / "stray.png")
    with pytest.raises(FileNotFoundError, match="no such folder .*missing"):
        build_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="unexpected option 'seed'"):
        build_dataset(root, seed=3)
