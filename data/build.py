"""``build_dataset``: one entry point from a dataset name or folder to a Dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from .image_folder import ImageFolderDataset
from .shard_dataset import ShardDataset
from .shards import is_shard_spec
from .synthetic import SyntheticShapes
from .torchvision_sets import TORCHVISION_SPLITS, load_torchvision_dataset

__all__ = ["DATASET_NAMES", "build_dataset"]

#: Names :func:`build_dataset` understands besides folder paths.
DATASET_NAMES: tuple[str, ...] = ("synthetic", *TORCHVISION_SPLITS)

_OPTIONS: dict[str, frozenset[str]] = {
    "synthetic": frozenset({"num_samples", "image_size", "num_classes", "seed"}),
    "torchvision": frozenset({"root"}),
    "folder": frozenset({"labeled", "cache", "cache_threads"}),
    "shards": frozenset({"seed", "buffer_size"}),
}


def _check_options(kind: str, label: str, options: dict[str, Any]) -> None:
    unknown = sorted(set(options) - _OPTIONS[kind])
    if unknown:
        accepted = ", ".join(sorted(_OPTIONS[kind])) or "none"
        raise ValueError(
            f"unexpected option {unknown[0]!r} for dataset {label} (accepted: {accepted})"
        )


def build_dataset(
    name: str | os.PathLike[str],
    split: str = "train",
    *,
    download: bool = False,
    strict: bool = False,
    transform: Callable[[Image.Image], Any] | None = None,
    **kwargs: Any,
) -> Dataset:
    """Build a dataset of ``(image, label)`` pairs from a name or a folder.

    Args:
        name: ``"synthetic"`` (:class:`SyntheticShapes`, embedded, no files), ``"cifar10"``,
            ``"cifar100"``, ``"stl10"`` (torchvision; option ``root``), or a folder path (an
            ImageFolder tree ``root/<class>/<image>`` or a flat folder of unlabeled images;
            options ``labeled``, ``cache``, ``cache_threads``), or WebDataset tar shards: a
            ``.tar`` path, a brace pattern ``dir/shard-{000000..000009}.tar`` or a folder of
            ``.tar`` files (a streaming :class:`~unimix.data.ShardDataset`; options ``seed``,
            ``buffer_size``). Names are matched case-insensitively and win over a folder of
            the same name (write ``./synthetic``).
        split: which split. For a folder (of images or shards): ``<folder>/<split>/`` if that
            folder exists, otherwise the folder itself (so a folder without splits serves
            every split). Ignored for a shard pattern.
        download: torchvision datasets only: fetch into ``root`` when missing.
        strict: folders only: raise on an undecodable image instead of skipping it.
        transform: applied to each PIL RGB image.
        **kwargs: options of the chosen dataset (see above); options set to ``None`` count as
            not given, so config fields can be passed through unconditionally.

    Returns:
        A map-style Dataset (for shards: an iterable one, without ``targets`` and ``get_uint8``)
        whose items are ``(transform(image) or PIL RGB image, label: int)``
        (label ``-1`` when unlabeled), with ``classes: list[str]``, ``targets: list[int]`` and
        ``get_uint8(i) -> [H, W, 3] uint8``.

    Raises:
        FileNotFoundError: a folder or torchvision dataset is missing (the message says how to
            download the latter), or a folder holds no images.
        ValueError: unknown split or option.
    """
    options = {key: value for key, value in kwargs.items() if value is not None}
    key = os.fspath(name).lower() if isinstance(name, str) else None
    if key == "synthetic":
        _check_options("synthetic", key, options)
        return SyntheticShapes(split, transform=transform, **options)
    if key in TORCHVISION_SPLITS:
        _check_options("torchvision", key, options)
        return load_torchvision_dataset(
            key, split, root=options.get("root"), download=download, transform=transform
        )

    if is_shard_spec(name, split):
        _check_options("shards", os.fspath(name), options)
        return ShardDataset(name, split, transform=transform, strict=strict, **options)
    return _folder_dataset(name, split, transform, strict, options)


def _folder_dataset(
    name: str | os.PathLike[str],
    split: str,
    transform: Callable[[Image.Image], Any] | None,
    strict: bool,
    options: dict[str, Any],
) -> ImageFolderDataset:
    """A folder of images: its ``<split>/`` subfolder when that exists, else the folder itself."""
    folder = Path(os.fspath(name)).expanduser()
    if not folder.exists():
        raise FileNotFoundError(
            f"unknown dataset {os.fspath(name)!r}: not one of {', '.join(DATASET_NAMES)} and "
            f"no such folder {folder.absolute()}"
        )
    _check_options("folder", os.fspath(name), options)
    if split and (folder / split).is_dir():
        folder = folder / split
    return ImageFolderDataset(folder, transform=transform, strict=strict, **options)
