"""The training images a run's ``data`` section names, and the ones it holds out: the one place
both pretraining and the k-NN's held-out bank and queries take them from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset

from .build import build_dataset
from .config import DataConfig
from .holdout import DatasetSubset, split_holdout
from .options import dataset_options

__all__ = ["build_training_set", "split_training_set"]


def build_training_set(
    data: DataConfig,
    seed: int,
    transform: Callable[[Any], Any] | None = None,
    *,
    root: str | None = None,
    download: bool = False,
    strict: bool | None = None,
    cache: bool = False,
) -> Dataset:
    """Split ``data.split`` of ``data.dataset``, held-out images included. ``root`` replaces
    ``data.root``; ``download`` adds to ``data.download``; ``strict`` (default ``data.strict``);
    ``cache``: decode a folder's images once (see :func:`~unimix.data.dataset_options`)."""
    options = dataset_options(
        data.dataset,
        root=root or data.root,
        num_samples=data.num_samples,
        image_size=data.image_size,
        seed=seed,
        cache=cache,
    )
    return build_dataset(
        data.dataset,
        data.split,
        download=download or data.download,
        strict=data.strict if strict is None else strict,
        transform=transform,
        **options,
    )


def split_training_set(data: DataConfig, dataset: Any) -> tuple[DatasetSubset, DatasetSubset]:
    """``(rest, held)``: ``dataset`` (from :func:`build_training_set`) without and with its
    ``data.holdout`` held-out images (:func:`~unimix.data.split_holdout`)."""
    if data.holdout >= len(dataset):
        raise ValueError(
            f"data.holdout={data.holdout}: the training set {data.dataset!r} has only "
            f"{len(dataset)} images"
        )
    return split_holdout(dataset, data.holdout)
