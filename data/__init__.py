"""Datasets shared by pretraining and evaluation.

Entry point: :func:`build_dataset` — ``"synthetic"`` (embedded demo data), ``"cifar10"``,
``"cifar100"``, ``"stl10"`` (torchvision, download off by default) or a folder (ImageFolder tree
or flat unlabeled images) or WebDataset tar shards (streamed: :class:`ShardDataset`, written by
:func:`write_shards`). Every dataset yields ``(PIL RGB image or transform(image), label)``
and exposes ``classes``, ``targets`` and ``get_uint8(i)`` (``[H, W, 3]`` uint8 pixels).
A run's ``data`` section is :class:`DataConfig`; :func:`build_training_set` builds what it names.

Each name is imported from its module on first use (PEP 562), so ``unimix shards --help`` and
the config schema do not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module of this package that defines it.
_LAZY: dict[str, str] = {
    "ArrayImageDataset": "arrays",
    "DATASET_NAMES": "build",
    "build_dataset": "build",
    "DataConfig": "config",
    "IMAGE_EXTENSIONS": "decode",
    "UnreadableImageError": "decode",
    "UnreadableImageWarning": "decode",
    "load_rgb": "decode",
    "to_rgb": "decode",
    "DatasetSubset": "holdout",
    "holdout_indices": "holdout",
    "split_holdout": "holdout",
    "ImageFolderDataset": "image_folder",
    "list_image_files": "image_folder",
    "dataset_options": "options",
    "is_generated": "options",
    "write_shards": "shard_writer",
    "ShardDataset": "shard_dataset",
    "ShardSet": "shards",
    "is_shard_spec": "shards",
    "SHAPES": "synthetic",
    "SyntheticShapes": "synthetic",
    "render_shapes": "synthetic",
    "TORCHVISION_SPLITS": "torchvision_sets",
    "default_data_root": "torchvision_sets",
    "load_torchvision_dataset": "torchvision_sets",
    "build_training_set": "training_set",
    "unlabeled": "labels",
    "split_training_set": "training_set",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
