"""A dataset over a uint8 pixel array already in memory (synthetic data, CIFAR, STL-10)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["ArrayImageDataset"]


class ArrayImageDataset(Dataset):
    """``(image, label)`` pairs from an ``[N, H, W, 3]`` uint8 array.

    Args:
        data: ``[N, H, W, 3]`` uint8 pixels; any array whose ``data[i]`` is ``[H, W, 3]``
            (a strided view works; items are made contiguous on access).
        targets: ``N`` integer labels (``-1`` for unlabeled images).
        classes: class names, ``classes[label]``; empty for unlabeled data.
        transform: applied to the PIL RGB image; ``None`` returns the PIL image.
        name: shown in ``repr``.

    Attributes: ``data``, ``targets`` (``list[int]``), ``classes`` (``list[str]``).
    """

    def __init__(
        self,
        data: np.ndarray,
        targets: Sequence[int],
        classes: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        name: str = "",
    ) -> None:
        if data.ndim != 4 or data.shape[-1] != 3 or data.dtype != np.uint8:
            raise ValueError(
                f"expected pixels of shape [N, H, W, 3] and dtype uint8, got "
                f"{tuple(data.shape)} {data.dtype}"
            )
        if len(targets) != len(data):
            raise ValueError(f"got {len(data)} images but {len(targets)} targets")
        self.data = data
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.transform = transform
        self.name = name or type(self).__name__

    def __len__(self) -> int:
        return len(self.data)

    def get_uint8(self, index: int) -> np.ndarray:
        """Pixels of item ``index``: a new ``[H, W, 3]`` uint8 array (C-contiguous)."""
        return np.array(self.data[index], order="C")

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image: Any = Image.fromarray(np.ascontiguousarray(self.data[index]))
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]

    def __repr__(self) -> str:
        n, h, w, _ = self.data.shape
        kind = f"{len(self.classes)} classes" if self.classes else "unlabeled"
        return f"{self.name}({n} images of {h}x{w}, {kind})"
