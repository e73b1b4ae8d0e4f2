"""The ``data`` section of a run's config: where images come from and how many go through one
optimizer step. Read by :mod:`unimix.data` (the training set, its held-out images) and by the
k-NN's choice of bank and queries; composed into the pretraining config by
:class:`unimix.ssl.config.PretrainConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["DataConfig"]

_POSITIVE = {"gt": 0}


@dataclass
class DataConfig:
    """Where images come from and how many go through one optimizer step."""

    #: ``synthetic``, ``cifar10``, ``cifar100``, ``stl10`` or a folder (see unimix.data); None
    #: in a recipe for the user's own data (``folder``): the run then asks for it.
    dataset: str | None = "synthetic"
    split: str = "train"
    #: torchvision datasets: their root folder (None: unimix.data's default).
    root: str | None = None
    download: bool = False
    #: Folder datasets: decode every image once at start-up and keep the pixels in RAM (fast
    #: epochs on small images such as CIFAR; not for ImageNet-sized data).
    cache: bool = False
    #: Image files that cannot be decoded: false skips them (each reported on one line, a
    #: summary count at the end; training uses the next readable image in their place, k-NN
    #: banks and queries drop them); true stops the run at the first one, naming it (exit 2).
    strict: bool = False
    #: synthetic only: number of images and their side.
    num_samples: int | None = field(default=None, metadata={"ge": 1})
    image_size: int | None = field(default=None, metadata={"ge": 8})
    #: Training images held out of pretraining to choose recipes on (a fixed random choice that
    #: depends on the dataset's size only, not on ``seed``; see unimix.data.split_holdout). With
    #: ``holdout > 0`` the run's k-NN is a validation k-NN: bank = the other training images,
    #: queries = the held-out ones; the test split is never read.
    holdout: int = field(default=0, metadata={"ge": 0})
    #: Global batch: source images per optimizer step over all processes and accumulation steps.
    batch_size: int = field(default=1024, metadata={"ge": 1})
    #: DataLoader worker processes per training process (0: augment in the training process).
    num_workers: int = field(default=2, metadata={"ge": 0})
    #: Where a folder's JPEG files are decoded: ``loader`` (workers, PIL) or ``device`` (the
    #: training process, in batches with torchvision's ``decode_jpeg``: nvJPEG on a GPU; needs
    #: ``augment.placement`` device, ``data.cache=false``; other files still decode in workers).
    decode: Literal["loader", "device"] = "loader"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = field(default=(0.229, 0.224, 0.225), metadata=_POSITIVE)
