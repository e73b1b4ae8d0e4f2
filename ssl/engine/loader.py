"""Which images each process sees at each step, and the DataLoader that augments them.

The data order is a pure function of (seed, epoch): a permutation of the dataset per epoch,
cut into global batches of ``batch_size`` (the incomplete last batch is dropped). Global batch
``b`` is split into ``accum`` micro-batches and each micro-batch into ``world_size`` equal
slices, one per process. Together with :class:`~unimix.ssl.multicrop.MultiCropAugment`, which
draws each sample's crops from (seed, epoch, index), this makes a run's data independent of the
number of processes and workers, and a resume needs nothing but the step number.

:class:`MultiCropBatches` is a map-style dataset whose item ``m`` is micro-batch ``m`` of the
whole run for this process: a DataLoader with ``batch_size=None`` reads and augments it in
worker processes (or only reads it and draws its crops, for the training process to render the
views on its GPU: :func:`render_on`), and starting mid-run is just a different first item.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ...data.image_folder import ImageFolderDataset
from ...data.jpeg import read_jpeg
from ...data.skips import announce_skipped, base_indices
from ..multicrop import CropBatch, MultiCropAugment, Source

__all__ = [
    "BatchPlan",
    "MultiCropBatches",
    "augmented_item",
    "jpeg_folder",
    "load_sources",
    "load_uint8",
    "make_loader",
    "render_on",
]


@dataclass(frozen=True)
class BatchPlan:
    """How the run's images are cut into steps, micro-batches and per-process slices."""

    num_samples: int
    batch_size: int  # global, per optimizer step
    accum: int
    world_size: int
    rank: int
    seed: int

    def __post_init__(self) -> None:
        if self.batch_size % (self.accum * self.world_size):
            raise ValueError(
                f"data.batch_size={self.batch_size} must be divisible by "
                f"optim.grad_accum_steps × processes = {self.accum} × {self.world_size}"
            )
        if self.num_samples < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} exceeds the dataset's {self.num_samples} images"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    @property
    def local_batch(self) -> int:
        """Source images per micro-batch on this process."""
        return self.batch_size // (self.accum * self.world_size)

    @functools.lru_cache(maxsize=2)  # noqa: B019 (a plan lives as long as its run)
    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, 0x5EED]).permutation(self.num_samples)

    def indices(self, micro: int) -> tuple[int, np.ndarray]:
        """(epoch, dataset indices of this process) for run-wide micro-batch number ``micro``."""
        step, part = divmod(micro, self.accum)
        epoch, batch = divmod(step, self.steps_per_epoch)
        start = batch * self.batch_size + (part * self.world_size + self.rank) * self.local_batch
        return epoch, self.permutation(epoch)[start : start + self.local_batch]


def load_uint8(dataset: Dataset, indices: Sequence[int]) -> list[np.ndarray]:
    """Source pixels ``[H, W, 3]`` uint8 of ``indices``, by the fastest path the dataset offers.

    In-memory arrays (``dataset.data`` ``[N, H, W, 3]`` uint8) are gathered in one indexing;
    datasets with ``get_uint8`` (unimix.data) are asked per image; any other dataset is read
    through ``__getitem__`` (PIL image or ``[H, W, 3]`` array first in each item).
    """
    data = getattr(dataset, "data", None)
    if isinstance(data, np.ndarray) and data.ndim == 4 and data.dtype == np.uint8:
        return list(data[np.asarray(indices)])
    if hasattr(dataset, "get_uint8"):
        return [dataset.get_uint8(int(i)) for i in indices]
    out = []
    for i in indices:
        item = dataset[int(i)]
        image = item[0] if isinstance(item, tuple | list) else item
        out.append(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image))
    return out


def augmented_item(
    augment: MultiCropAugment,
    images: Sequence[np.ndarray],
    indices: Sequence[int],
    epoch: int,
    render: bool,
) -> dict[str, object]:
    """One micro-batch as a loader yields it: ``{"crops": [...], "indices": [b]}`` with the
    views rendered here (``render``), else ``{"views": CropBatch, "indices": [b]}`` for the
    training process to render on its device (:func:`render_on`)."""
    index_tensor = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
    batch = augment.prepare(images, list(indices), epoch)
    if render:
        return {"crops": augment.render(batch), "indices": index_tensor}
    return {"views": batch, "indices": index_tensor}


def render_on(
    items: Iterator[dict[str, object]], augment: MultiCropAugment, device: torch.device
) -> Iterator[dict[str, object]]:
    """``items`` with every ``"views"`` :class:`CropBatch` rendered into ``"crops"`` on
    ``device`` (copied asynchronously when the loader pinned it)."""
    for item in items:
        if "views" in item:
            batch: CropBatch = item.pop("views")  # type: ignore[assignment]
            item["crops"] = augment.render(batch.to(device, non_blocking=True))
        yield item


def jpeg_folder(dataset: Dataset) -> bool:
    """Whether ``dataset``'s images are files read from disk (an uncached image folder, or a
    subset of one), whose JPEGs :func:`load_sources` can hand over undecoded."""
    base, _ = base_indices(dataset)
    return isinstance(base, ImageFolderDataset) and not base.cached


def load_sources(dataset: Dataset, indices: Sequence[int], jpeg: bool = False) -> list[Source]:
    """:func:`load_uint8`, or with ``jpeg`` (a :func:`jpeg_folder` dataset) each JPEG file's
    bytes, to be decoded where the views are rendered; other files are decoded here."""
    if not jpeg:
        return load_uint8(dataset, indices)
    base, index = base_indices(dataset)
    out: list[Source] = []
    for i in indices:
        encoded = read_jpeg(base.files[index[i]])
        out.append(encoded if encoded is not None else base.get_uint8(int(index[i])))
    return out


class MultiCropBatches(Dataset):
    """Item ``m``: this process's micro-batch ``m`` of the run, as multi-crop views.

    Returns ``{"crops": [globals [2·b, 3, G, G], locals [V_l·b, 3, L, L]], "indices": [b]}``
    (view-major rows; no locals entry when ``num_local == 0``), or with ``render=False``
    ``{"views": CropBatch, "indices": [b]}`` (see :func:`augmented_item`), whose JPEG files
    stay undecoded with ``jpeg=True`` (see :func:`load_sources`).
    """

    def __init__(
        self,
        dataset: Dataset,
        plan: BatchPlan,
        augment: MultiCropAugment,
        total: int,
        render: bool = True,
        jpeg: bool = False,
    ) -> None:
        self.dataset, self.plan, self.augment, self.total = dataset, plan, augment, total
        self.render, self.jpeg = render, jpeg

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, micro: int) -> dict[str, object]:
        epoch, indices = self.plan.indices(micro)
        images = load_sources(self.dataset, indices, self.jpeg)
        return augmented_item(self.augment, images, indices.tolist(), epoch, self.render)


class _RangeSampler(Sampler[int]):
    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = start, stop

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


class _AnnouncingLoader(DataLoader):
    """A DataLoader that, in the main process after each micro-batch, announces the image
    files its workers found unreadable (one line each through tqdm's writer: the progress bar
    is redrawn, not broken)."""

    def __iter__(self):
        source = self.dataset.dataset
        for item in super().__iter__():
            announce_skipped(source)
            yield item


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the training process owns the cores; a worker only augments


def make_loader(
    batches: MultiCropBatches,
    start: int,
    num_workers: int,
    seed: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader yielding micro-batches ``start, start+1, …`` of ``batches`` in order.

    One loader serves the whole run (an item is a micro-batch of any epoch), so its workers
    live across epochs. It has its own generator, so creating it never consumes the global
    torch RNG (whose state a checkpoint restores for dropout / drop-path). ``pin_memory``: page-
    locked batches, for asynchronous copies to a GPU.
    """
    return _AnnouncingLoader(
        batches,
        batch_size=None,
        sampler=_RangeSampler(start, len(batches)),
        num_workers=num_workers,
        worker_init_fn=_worker_init if num_workers else None,
        persistent_workers=False,
        prefetch_factor=2 if num_workers else None,
        generator=torch.Generator().manual_seed(seed),
        pin_memory=pin_memory,
    )
