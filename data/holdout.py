"""A validation split carved from a training set: a fixed random subset held out of pretraining.

Recipes are chosen on held-out *training* images (k-NN bank = the rest of the training set,
queries = the held-out images), so the test set is read once, for the finalists. The held-out
images are a function of the dataset size and the count alone — never of the run's seed — so
every run of a search holds out the same images and pretrains on the same rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

__all__ = ["HOLDOUT_SEED", "DatasetSubset", "holdout_indices", "split_holdout"]

#: Seed of the held-out choice (fixed: the split must not move with the run's seed).
HOLDOUT_SEED = 0x401D


def holdout_indices(num_items: int, holdout: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held)``: sorted int64 indices partitioning ``range(num_items)``, ``len(held) ==
    holdout``, drawn by one seeded permutation (a function of ``num_items`` and ``holdout``)."""
    if not 0 <= holdout < num_items:
        raise ValueError(
            f"holdout: expected 0 <= holdout < {num_items} (the training set's size), got {holdout}"
        )
    order = np.random.default_rng([HOLDOUT_SEED, num_items]).permutation(num_items)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


class DatasetSubset(Dataset):
    """Items ``indices`` of a unimix dataset, keeping its interface (``targets``, ``classes``,
    ``get_uint8``), unlike ``torch.utils.data.Subset``; ``transform`` is the parent's."""

    def __init__(self, dataset: Any, indices: Sequence[int], name: str = "") -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        parent = getattr(dataset, "targets", None)
        self.targets = [int(parent[i]) for i in self.indices] if parent is not None else None
        self.classes = list(getattr(dataset, "classes", []))
        self.name = name

    def __len__(self) -> int:
        return len(self.indices)

    def get_uint8(self, index: int) -> np.ndarray:
        """Pixels ``[H, W, 3]`` uint8 of item ``index`` (parent item ``indices[index]``)."""
        return self.dataset.get_uint8(int(self.indices[index]))

    def __getitem__(self, index: int) -> Any:
        return self.dataset[int(self.indices[index])]

    def __repr__(self) -> str:
        label = f"{self.name} " if self.name else ""
        return f"{label}{len(self)} of {self.dataset!r}"


def split_holdout(dataset: Any, holdout: int) -> tuple[DatasetSubset, DatasetSubset]:
    """``(rest, held)`` of ``dataset`` (see :func:`holdout_indices`)."""
    kept, held = holdout_indices(len(dataset), holdout)
    return (
        DatasetSubset(dataset, kept, name=f"train minus {holdout} held out"),
        DatasetSubset(dataset, held, name="held-out train"),
    )
