"""Datasets shared by pretraining and evaluation.

Entry point: :func:`build_dataset` — ``"synthetic"`` (embedded demo data), ``"cifar10"``,
``"cifar100"``, ``"stl10"`` (torchvision, download off by default) or a folder (ImageFolder tree
or flat unlabeled images) or WebDataset tar shards (streamed: :class:`ShardDataset`, written by
:func:`write_shards`). Every dataset yields ``(PIL RGB image or transform(image), label)``
and exposes ``classes``, ``targets`` and ``get_uint8(i)`` (``[H, W, 3]`` uint8 pixels).
"""

from .arrays import ArrayImageDataset
from .build import DATASET_NAMES, build_dataset
from .decode import (
    IMAGE_EXTENSIONS,
    UnreadableImageError,
    UnreadableImageWarning,
    load_rgb,
    to_rgb,
)
from .holdout import DatasetSubset, holdout_indices, split_holdout
from .image_folder import ImageFolderDataset, list_image_files
from .options import dataset_options, is_generated
from .shard_writer import write_shards
from .shards import ShardDataset, ShardSet, is_shard_spec
from .synthetic import SHAPES, SyntheticShapes, render_shapes
from .torchvision_sets import TORCHVISION_SPLITS, default_data_root, load_torchvision_dataset

__all__ = [
    "DATASET_NAMES",
    "IMAGE_EXTENSIONS",
    "SHAPES",
    "ShardDataset",
    "ShardSet",
    "TORCHVISION_SPLITS",
    "ArrayImageDataset",
    "DatasetSubset",
    "ImageFolderDataset",
    "SyntheticShapes",
    "UnreadableImageError",
    "UnreadableImageWarning",
    "build_dataset",
    "dataset_options",
    "default_data_root",
    "holdout_indices",
    "is_generated",
    "is_shard_spec",
    "list_image_files",
    "load_rgb",
    "load_torchvision_dataset",
    "render_shapes",
    "split_holdout",
    "to_rgb",
    "write_shards",
]
