"""A user's own map-style dataset as unimix reads it (the Python API: ``unimix.pretrain(cfg,
dataset=..., eval_dataset=(bank, queries))``).

A usable dataset has ``__len__`` and ``__getitem__`` and yields a PIL image, an ``[H, W, 3]``
uint8 array, or a pair whose first element is one of those (``(image, label)``); the k-NN's
bank and queries must yield pairs with an integer label. Anything else is refused up front
with a one-line :class:`TypeError`, not deep inside a DataLoader worker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["LabeledTransformed", "check_image_dataset"]


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} {list(shape)}" if shape is not None else type(value).__name__


def _is_image(value: Any) -> bool:
    if hasattr(value, "convert") and hasattr(value, "size"):  # a PIL image
        return True
    return (
        isinstance(value, np.ndarray)
        and value.dtype == np.uint8
        and value.ndim == 3
        and value.shape[-1] == 3
    )


def check_image_dataset(dataset: Any, name: str = "dataset", labeled: bool = False) -> Dataset:
    """Return ``dataset`` unchanged if unimix can read it, else raise a one-line TypeError
    naming ``name`` (item 0 is read once to check what the dataset yields)."""
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            f"{name}: expected a map-style Dataset (with __len__ and __getitem__), "
            f"got {type(dataset).__name__}"
        )
    if len(dataset) == 0:
        raise TypeError(f"{name}: the dataset is empty")
    item = dataset[0]
    pair = isinstance(item, tuple | list) and len(item) >= 2
    image = item[0] if isinstance(item, tuple | list) and item else item
    if labeled and not (pair and isinstance(item[1], int | np.integer)):
        raise TypeError(
            f"{name}[0]: expected an (image, integer label) pair, got {_describe(item)}"
            + (f" with label {_describe(item[1])}" if pair else "")
        )
    if not _is_image(image):
        raise TypeError(
            f"{name}[0]: expected a PIL image, an [H, W, 3] uint8 array or an (image, label) "
            f"pair, got {_describe(image)}"
        )
    return dataset


class LabeledTransformed(Dataset):
    """``(transform(RGB image), int label)`` of a user's labeled dataset (for feature extraction)."""

    def __init__(self, dataset: Any, transform: Callable[[Any], Any]) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.dataset[index][:2]
        if isinstance(image, np.ndarray):
            from PIL import Image

            image = Image.fromarray(image)
        return self.transform(image.convert("RGB")), int(label)
