"""Convert an image folder into WebDataset tar shards (the ``unimix shards`` command's work).

Each image is stored as its original encoded bytes (never re-encoded) under a numeric key, with
its label as ``<key>.cls`` (labeled trees only). ``shards.json`` next to the shards keeps the
class names and each shard's sample count, by file name only (no absolute paths), so a run knows
its epoch length without reading the tars.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .image_folder import ImageFolderDataset
from .shards import INDEX_NAME

__all__ = ["write_shards"]


def _merge_index(out: Path, classes: list[str], written: dict[str, int]) -> dict[str, Any]:
    """``out/shards.json`` with ``written`` added (an existing index must have the same classes)."""
    path = out / INDEX_NAME
    index: dict[str, Any] = {"format": "webdataset", "classes": classes, "shards": {}}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("classes", []) != classes:
            raise ValueError(
                f"{path} lists other classes ({len(old.get('classes', []))}) than this folder "
                f"({len(classes)}): write these shards to another folder"
            )
        index["shards"] = dict(old.get("shards", {}))
    index["shards"].update(written)
    index["num_samples"] = sum(index["shards"].values())
    path.write_text(json.dumps(index, indent=1) + "\n")
    return index


def write_shards(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    shard_size: int = 1000,
    prefix: str = "shard",
    labeled: bool | None = None,
) -> dict[str, Any]:
    """Write the images of ``folder`` (ImageFolder tree or flat folder, as
    :class:`~unimix.data.ImageFolderDataset` lists them) into ``out/<prefix>-NNNNNN.tar``.

    Sample ``i`` (in listing order: sorted classes, sorted files) has key ``f"{i:09d}"`` and
    members ``<key>.<original suffix>`` and, when labeled, ``<key>.cls`` (the label as text).
    Members carry a fixed mtime, so the same folder gives byte-identical shards.

    Returns:
        The index written to ``out/shards.json``: ``classes``, ``shards`` (file name → samples)
        and ``num_samples``.

    Raises:
        FileNotFoundError / NotADirectoryError / ValueError: as ImageFolderDataset for the
            folder; ValueError for ``shard_size < 1`` or an index with other classes in ``out``.
    """
    from webdataset import TarWriter

    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    if not prefix or os.sep in prefix or "{" in prefix:
        raise ValueError(f"--prefix must be a plain file name stem, got {prefix!r}")
    images = ImageFolderDataset(folder, labeled=labeled)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output {out_dir} is a file, expected a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, int] = {}
    for first in range(0, len(images.files), shard_size):
        name = f"{prefix}-{first // shard_size:06d}.tar"
        batch = range(first, min(first + shard_size, len(images.files)))
        with TarWriter(str(out_dir / name), encoder=False, mtime=0.0) as tar:
            for i in batch:
                path = images.files[i]
                sample: dict[str, Any] = {"__key__": f"{i:09d}"}
                sample[os.path.splitext(path)[1].lstrip(".").lower()] = Path(path).read_bytes()
                if images.targets[i] >= 0:
                    sample["cls"] = str(images.targets[i]).encode()
                tar.write(sample)
        written[name] = len(batch)
    return _merge_index(out_dir, list(images.classes), written)
