"""CIFAR-10, CIFAR-100 and STL-10 through torchvision, with downloads off unless asked for."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .arrays import ArrayImageDataset

__all__ = ["TORCHVISION_SPLITS", "default_data_root", "load_torchvision_dataset"]

#: Dataset name → accepted splits.
TORCHVISION_SPLITS: dict[str, tuple[str, ...]] = {
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
}
# What torchvision expects to find under root (named in the "not found" error).
_EXPECTED_FOLDER = {
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
    "stl10": "stl10_binary",
}


def default_data_root() -> Path:
    """Where torchvision datasets live when no ``root`` is given.

    ``$UNIMIX_DATA`` if set, else ``$XDG_CACHE_HOME/unimix/datasets`` (``~/.cache/...``). Never
    the working directory: from the repository root, ``./data`` is the ``unimix.data`` source.
    """
    if os.environ.get("UNIMIX_DATA"):
        return Path(os.environ["UNIMIX_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "unimix" / "datasets"


def load_torchvision_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    transform: Callable[[Image.Image], Any] | None = None,
) -> ArrayImageDataset:
    """Load ``"cifar10"``, ``"cifar100"`` or ``"stl10"`` into memory.

    Args:
        name: dataset name (see :data:`TORCHVISION_SPLITS`).
        split: ``train``/``test`` (STL-10 also ``unlabeled`` and ``train+unlabeled``; unlabeled
            images have label ``-1``).
        root: folder holding torchvision's files (default :func:`default_data_root`).
        download: fetch the dataset into ``root`` if it is missing (off by default).
        transform: applied to the PIL RGB image.

    Returns:
        An :class:`ArrayImageDataset` with ``data`` ``[N, H, W, 3]`` uint8 (32 px for CIFAR,
        96 px for STL-10), ``targets`` and ``classes``.

    Raises:
        FileNotFoundError: the dataset is not under ``root`` and ``download`` is false; the
            message says how to download it.
        ValueError: unknown name or split.
    """
    import torchvision.datasets as tvd  # deferred: only these datasets need it

    if name not in TORCHVISION_SPLITS:
        raise ValueError(
            f"unknown torchvision dataset {name!r}: expected one of {list(TORCHVISION_SPLITS)}"
        )
    if split not in TORCHVISION_SPLITS[name]:
        raise ValueError(
            f"{name} has no split {split!r}: expected one of {list(TORCHVISION_SPLITS[name])}"
        )
    root_path = Path(root).expanduser() if root is not None else default_data_root()
    try:
        if name == "stl10":
            raw = tvd.STL10(str(root_path), split=split, download=download)
            data = raw.data.transpose(0, 2, 3, 1)  # [N, 3, 96, 96] → view [N, 96, 96, 3]
            targets = np.asarray(raw.labels).tolist()  # -1 for unlabeled images
        else:
            cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
            raw = cls(str(root_path), train=split == "train", download=download)
            data, targets = raw.data, list(raw.targets)
    except RuntimeError as error:
        if "not found" not in str(error).lower():
            raise
        raise FileNotFoundError(
            f"{name} not found under {root_path} (expected {root_path / _EXPECTED_FOLDER[name]}): "
            "download it with --download (CLI) or data.download=true (config), "
            "or set root to the folder that holds it"
        ) from None
    return ArrayImageDataset(data, targets, raw.classes, transform, name=f"{name}[{split}]")
