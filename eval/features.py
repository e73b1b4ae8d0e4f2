"""Frozen features: the evaluation transform, batched extraction on any device and in any number
of processes (into memory, a safetensors cache or a memory-mapped store), BatchNorm
recalibration. Checkpoints are read by :func:`unimix.checkpoint.load_backbone` (re-exported).

Unreadable image files are dropped, never replaced: their rows (features and labels) are left
out of what extraction returns, each file is reported on one line as it is found and rank 0
ends with one summary line (:mod:`unimix.data.skips`); with ``strict`` datasets the first one
raises instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from unimix.checkpoint import clean_state_dict, load_backbone, save_safetensors
from unimix.data.skips import (
    announce_skipped,
    base_indices,
    mark_reported,
    skipped_mask,
    summary_line,
    warn_unreadable,
)

from .device import is_accelerator, resolve_device
from .distributed import barrier, gather_rows, shard_range, world
from .feature_store import META, FeatureStore

__all__ = [
    "calibrate_batchnorm",
    "clean_state_dict",
    "eval_data_config",
    "eval_transform",
    "extract_features",
    "extract_to_store",
    "load_backbone",
]

logger = logging.getLogger("unimix.eval")


#: Above this size the eval transform resizes then centre-crops (the DINO / ImageNet protocol,
#: 224 <- 256); at or below it the image is resized to the size (a 32-px image has no border to
#: spare).
CROP_ABOVE = 64
CROP_PCT = 0.875


def eval_data_config(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> dict[str, Any]:
    """timm's data config of unimix's eval transform (``input_size``, ``interpolation``,
    ``mean``, ``std``, ``crop_pct``, ``crop_mode``): what ``--format hf`` writes into
    ``pretrained_cfg`` and :func:`eval_transform` is built from, so both always agree."""
    crop = image_size > CROP_ABOVE
    return {
        "input_size": (3, int(image_size), int(image_size)),
        "interpolation": "bilinear",
        "mean": tuple(float(v) for v in mean),
        "std": tuple(float(v) for v in std),
        "crop_pct": CROP_PCT if crop else 1.0,
        "crop_mode": "center" if crop else "squash",
    }


def eval_transform(
    image_size: int, mean: Sequence[float], std: Sequence[float]
) -> Callable[[Any], torch.Tensor]:
    """PIL image (or ``[H, W, 3]`` uint8 array) → normalised float tensor
    ``[3, image_size, image_size]``: timm's ``create_transform`` of :func:`eval_data_config`.

    Above 64 px: bilinear resize of the shorter side to ``floor(image_size / 0.875)`` and a
    centre crop (224 ← 256, 96 ← 109); at 64 px and below a plain resize to ``image_size``.
    """
    from timm.data import create_transform

    # timm's own transform, not a copy of it: a user who loads the export with timm and
    # resolve_data_config gets these exact tensors (a hand-written copy once rounded 96 / 0.875
    # to 110 where timm floors it to 109).
    transform = create_transform(**eval_data_config(image_size, mean, std), is_training=False)
    transform.transforms.insert(0, ArrayToPIL())
    return transform


class ArrayToPIL:
    """``[H, W, 3]`` uint8 array → PIL image; anything else unchanged (timm's eval transform
    resizes PIL images and tensors only)."""

    def __call__(self, image: Any) -> Any:
        from PIL import Image

        return Image.fromarray(image) if isinstance(image, np.ndarray) else image

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _hash_tensor(h: Any, tensor: torch.Tensor) -> None:
    h.update(str((tuple(tensor.shape), tensor.dtype)).encode())
    h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())


def _dataset_fingerprint(h: Any, dataset: Any) -> None:
    """Hash what identifies ``dataset`` across processes (never a memory address).

    Subset indices, the base dataset's type, ``root``/``split``/``files``/``targets`` when it has
    them, its transform's repr, and three items as they come out (so the transform's effect and
    the pixels themselves are in the key too).
    """
    n = len(dataset)
    h.update(f"{type(dataset).__qualname__}:{n}".encode())
    base = dataset
    while isinstance(base, torch.utils.data.Subset):
        h.update(np.asarray(base.indices, dtype=np.int64).tobytes())
        base = base.dataset
    h.update(f"{type(base).__module__}.{type(base).__qualname__}".encode())
    for attr in ("root", "split", "files", "targets", "transform"):
        if getattr(base, attr, None) is not None:
            h.update(f"{attr}={getattr(base, attr)!r}".encode())
    for i in sorted({0, n // 2, n - 1}):
        image, label = dataset[i]
        _hash_tensor(h, torch.as_tensor(image))
        h.update(str(int(label)).encode())


def _cache_key(model: nn.Module, dataset: Any, cache_tag: str | None) -> str:
    """Hash of the model's weights, the dataset (:func:`_dataset_fingerprint`) and ``cache_tag``."""
    h = hashlib.sha256()
    h.update((cache_tag or "").encode())
    h.update(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():  # the weights themselves, not a file name
        h.update(name.encode())
        _hash_tensor(h, tensor)
    _dataset_fingerprint(h, dataset)
    return h.hexdigest()[:24]


def _batches(
    model: nn.Module,
    dataset: Any,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    progress: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(features [B, D] float32 on the CPU, labels [B] int64)`` batch by batch, in order.

    Loader workers feed the model; on an accelerator the batches come from pinned memory and
    are copied without blocking. The model runs in eval mode on ``device`` (mode restored)."""
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=is_accelerator(device),
        persistent_workers=False,
        drop_last=False,
    )
    if progress:
        from tqdm.auto import tqdm

        loader = tqdm(loader, desc="features", unit="batch", leave=False)
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.no_grad():  # not inference_mode: callers may train on the features
            for images, targets in loader:
                out = model(images.to(device, non_blocking=True)).float().cpu()
                announce_skipped(dataset)  # files the loader workers found unreadable
                yield out, torch.as_tensor(targets).long().reshape(-1)
    finally:
        model.train(was_training)


def _placement(
    device: torch.device | str | None, accelerator: Any, shard: bool | None
) -> tuple[torch.device, int, int]:
    """``(device, rank, world size)``: the accelerator's device and processes when given; the
    process group's when ``shard`` is True; else one process."""
    if accelerator is not None:
        device = accelerator.device
        if shard is None:
            shard = accelerator.num_processes > 1
    rank, size = world() if shard else (0, 1)
    return resolve_device(device or "cpu"), rank, size


def _unreadable_rows(dataset: Any, part: Any, rank: int) -> torch.Tensor:
    """``[len(dataset)]`` bool, identical on every process: rows whose image file was found
    unreadable while ``part`` (this process's block) was extracted. Rank 0 prints the summary
    line; every process marks its files as summarized (no second summary at exit)."""
    n = len(dataset)
    flags = torch.from_numpy(skipped_mask(part).astype(np.uint8))
    drop = gather_rows(flags, n).bool()
    mark_reported(part)
    count = int(drop.sum())
    if count and rank == 0:
        base, index = base_indices(dataset)
        files = getattr(base, "files", None)
        first = files[int(index[int(drop.nonzero()[0, 0])])] if files else "?"
        root = getattr(base, "root", repr(base))
        warn_unreadable(summary_line(count, n, first, root, "left out of the features"))
    if count == n:
        raise ValueError(f"none of the {n} images of {dataset!r} is readable")
    return drop


def extract_features(
    model: nn.Module,
    dataset: Any,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    accelerator: Any = None,
    shard: bool | None = None,
    progress: bool = True,
    cache_dir: str | os.PathLike | None = None,
    cache_tag: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of every item of ``dataset`` (items ``(image_tensor, label)``), in dataset order.

    Args:
        model: ``[B, 3, H, W]`` → ``[B, D]``; run in eval mode (restored afterwards).
        dataset: map-style, yielding already transformed image tensors and int labels.
        device: where the model runs (``"auto"``, ``"cuda:1"`` …; default the CPU).
        num_workers: DataLoader workers; memory is pinned when ``device`` is an accelerator.
        accelerator: an ``accelerate.Accelerator`` (or ``PartialState``): its device, and with
            several processes each extracts its block of the dataset
            (:func:`~unimix.eval.distributed.shard_range`) and the blocks are gathered, so every
            process returns the same tensors as one process would.
        shard: force sharding over the default process group (True) or not (False); default:
            when ``accelerator`` has several processes.
        cache_dir: when given, features are stored as safetensors under a key hashed from the
            model's weights, the dataset (type, root/files/targets, subset indices, three
            transformed items) and its transform's repr; a later call, in this process or
            another, with the same model and data returns the stored tensors. Models without
            weights in ``state_dict`` (an ONNX extractor) need ``cache_tag`` to tell them apart.
        cache_tag: extra text mixed into the cache key (the CLI passes the model file's path,
            size and modification time).

    Returns:
        ``(features [K, D] float32, labels [K] int64)`` on the CPU, not normalised: the K
        items whose image could be read, in dataset order; an unreadable file's row is
        dropped (reported on one line, and a summary at the end), never replaced.
    """
    cache_file = None
    if cache_dir is not None:
        cache_file = (
            Path(cache_dir) / f"features_{_cache_key(model, dataset, cache_tag)}.safetensors"
        )
        if cache_file.is_file():
            stored = _read_cache(cache_file)
            if stored is not None:
                return stored
    if len(dataset) == 0:
        raise ValueError(f"extract_features: dataset {dataset!r} is empty")
    device, rank, size = _placement(device, accelerator, shard)
    block = shard_range(len(dataset), rank, size)
    part = dataset if size == 1 else torch.utils.data.Subset(dataset, list(block))
    features, labels = [], []
    if len(block):
        for out, targets in _batches(
            model, part, device, batch_size, num_workers, progress and rank == 0
        ):
            features.append(out)
            labels.append(targets)
    else:  # more processes than items: an empty block, shaped like the others
        dim = _feature_dim(model, dataset, device)
        features, labels = [torch.empty(0, dim)], [torch.empty(0, dtype=torch.long)]
    keep = ~_unreadable_rows(dataset, part, rank)
    result = (
        gather_rows(torch.cat(features), len(dataset))[keep],
        gather_rows(torch.cat(labels), len(dataset))[keep],
    )
    if cache_file is not None and rank == 0:
        _write_cache(cache_file, result)
    return result


def _read_cache(file: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached ``(features [N, D], labels [N])``, or None (with a warning line) when the file
    cannot be read or does not hold them: a cache miss, computed again and rewritten."""
    try:
        stored = load_file(os.fspath(file))
        features, labels = stored["features"], stored["labels"]
        if features.ndim != 2 or labels.shape != (features.shape[0],):
            raise ValueError(f"shapes {tuple(features.shape)} and {tuple(labels.shape)}")
    except Exception as err:  # SafetensorError for a cut file, KeyError, OSError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        logger.warning("feature cache %s is unreadable (%s): computing it again", file, first)
        return None
    return features, labels


def _write_cache(file: Path, result: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Store ``result`` atomically; a cache folder that cannot be written is a warning line
    (the features are computed; only the next run will not find them)."""
    tmp = file.with_suffix(f".{os.getpid()}.tmp")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors({"features": result[0].contiguous(), "labels": result[1]}, tmp)
        os.replace(tmp, file)
    except Exception as err:  # OSError, or safetensors' own I/O error
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        logger.warning("feature cache %s not written (%s)", file, first)


def _feature_dim(model: nn.Module, dataset: Any, device: torch.device) -> int:
    """D of ``model``'s features, from the dataset's first item."""
    was_training = model.training
    model.eval().to(device)
    try:
        with torch.no_grad():
            return int(model(torch.as_tensor(dataset[0][0])[None].to(device)).shape[1])
    finally:
        model.train(was_training)


def extract_to_store(
    model: nn.Module,
    dataset: Any,
    directory: str | os.PathLike,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    accelerator: Any = None,
    shard: bool | None = None,
    progress: bool = True,
    cache_tag: str | None = None,
) -> FeatureStore:
    """Stream the features of ``dataset`` into a :class:`FeatureStore` under ``directory``
    (``store_<key>``, the key as for ``extract_features``' cache; a complete store is reused).
    Rows of unreadable files are dropped as in :func:`extract_features` (the store is
    compacted in place before it is marked complete).

    Batches go straight to the memory-mapped file, so memory holds one batch, not the bank.
    With several processes each writes its own block of rows (the directory must be on a
    filesystem every process sees) and every process returns the same store.
    """
    if len(dataset) == 0:
        raise ValueError(f"extract_to_store: dataset {dataset!r} is empty")
    target = Path(directory) / f"store_{_cache_key(model, dataset, cache_tag)}"
    damage = FeatureStore.damage(target)
    if damage is None:
        return FeatureStore(target)
    if damage not in ("not complete", f"no {META}"):  # marked complete, but cut short
        logger.warning("feature store %s is damaged (%s): computing it again", target, damage)
    device, rank, size = _placement(device, accelerator, shard)
    if rank == 0:
        FeatureStore.allocate(target, len(dataset), _feature_dim(model, dataset, device))
    barrier()
    store = FeatureStore(target)
    block = shard_range(len(dataset), rank, size)
    part = dataset if size == 1 else torch.utils.data.Subset(dataset, list(block))
    if len(block):
        row = block.start
        for out, targets in _batches(
            model, part, device, batch_size, num_workers, progress and rank == 0
        ):
            store.write(row, out.numpy(), targets.numpy())
            row += out.shape[0]
    drop = _unreadable_rows(dataset, part, rank)
    barrier()
    if rank == 0:
        if drop.any():
            store.drop_rows(drop.numpy())
        store.mark_complete()
    barrier()
    return FeatureStore(target)


def calibrate_batchnorm(
    model: nn.Module, dataset: Any, images: int = 2048, seed: int = 0, batch_size: int = 256
) -> int:
    """Set ``model``'s BatchNorm running statistics from ``images`` random samples of ``dataset``.

    For an *untrained* baseline: at init the statistics are 0/1, which alone costs a BatchNorm
    network several k-NN points (acmix_nano on CIFAR-10: 30.05 → 33.50 top-1 at k = 20), a gap
    any training run closes for free. Uses torch's ``update_bn`` (cumulative averages over the
    batches; weights untouched). ``dataset`` yields ``(image [3, S, S], label)``.

    Returns the number of images used (0, model untouched, when it has no BatchNorm or
    ``images <= 0``). Leaves the model in eval mode.
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    if images <= 0 or not any(isinstance(m, _BatchNorm) for m in model.modules()):
        return 0
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(dataset), generator=g)[:images].tolist()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, picked), batch_size=batch_size
    )
    # BatchNorm always has buffers, so this finds the device even without parameters.
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(loader, model, device=device)
    model.eval()
    return len(picked)
