"""The feature cache of :func:`~unimix.eval.extract_features`: features stored as safetensors
under a key hashed from the model's weights and the dataset, so a second evaluation of the same
checkpoint on the same images skips the backbone. A file that cannot be read is a cache miss;
one that cannot be written is a warning."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from ..checkpoint import save_safetensors

__all__ = ["cache_key", "read_cache", "write_cache"]

logger = logging.getLogger("unimix.eval")


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


def cache_key(model: nn.Module, dataset: Any, cache_tag: str | None) -> str:
    """Hash of the model's weights, the dataset (:func:`_dataset_fingerprint`) and ``cache_tag``."""
    h = hashlib.sha256()
    h.update((cache_tag or "").encode())
    h.update(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():  # the weights themselves, not a file name
        h.update(name.encode())
        _hash_tensor(h, tensor)
    _dataset_fingerprint(h, dataset)
    return h.hexdigest()[:24]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def read_cache(file: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached ``(features [N, D], labels [N])``, or None (with a warning line) when the file
    cannot be read or does not hold them: a cache miss, computed again and rewritten."""
    try:
        stored = load_file(os.fspath(file))
        features, labels = stored["features"], stored["labels"]
        if features.ndim != 2 or labels.shape != (features.shape[0],):
            raise ValueError(f"shapes {tuple(features.shape)} and {tuple(labels.shape)}")
    except Exception as err:  # SafetensorError for a cut file, KeyError, OSError, ...
        logger.warning(
            "feature cache %s is unreadable (%s): computing it again", file, _first_line(err)
        )
        return None
    return features, labels


def write_cache(file: Path, result: tuple[torch.Tensor, torch.Tensor]) -> None:
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
        logger.warning("feature cache %s not written (%s)", file, _first_line(err))
