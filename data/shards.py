"""Streaming WebDataset tar shards: find them, count them, order them, read them.

A shard is a POSIX tar file whose samples are consecutive members ``<key>.<ext>`` sharing a
key (``000123.jpg`` + ``000123.cls``), the WebDataset layout. Tar parsing and the
key/extension split are webdataset's own (``tar_file_iterator``, ``group_by_keys``), brace
patterns are expanded by its ``expand_urls``; the order of shards and samples is ours, because
it must be a pure function of (seed, epoch, rank, reader) for a run and its resume to agree.

Sample ``i`` of shard ``s`` has the global index ``offsets[s] + i`` (shards in their sorted
listing order): augmentation draws are keyed by it, as for map-style datasets.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from .decode import IMAGE_EXTENSIONS, UnreadableImageError, to_rgb, warn_if_large
from .image_folder import _not_regular
from .skips import warn_unreadable

__all__ = [
    "INDEX_NAME",
    "SHUFFLE_BUFFER",
    "ShardSample",
    "ShardSet",
    "buffer_rng",
    "decode_image_bytes",
    "decoded_samples",
    "is_shard_spec",
    "iter_shard_samples",
    "reader_shards",
    "shard_order",
    "shuffle_buffer",
]

#: The converter's index next to the shards: classes and per-shard sample counts.
INDEX_NAME = "shards.json"
#: Samples held (still encoded) by each reader's shuffle buffer.
SHUFFLE_BUFFER = 1000
_IMAGE_SUFFIXES = frozenset(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)
_SHARD_SALT, _BUFFER_SALT = 0x5A4D, 0xB0FF


def _expand(spec: str) -> list[str]:
    from webdataset.shardlists import expand_urls

    return list(expand_urls(spec))


def is_shard_spec(name: str | os.PathLike[str], split: str = "") -> bool:
    """Whether ``name`` names shards: a ``.tar`` path or brace pattern, a ``pipe:`` or URL
    spec, or a folder (or its ``split`` subfolder) holding ``.tar`` files directly inside it
    and no image files."""
    text = os.fspath(name)
    if text.lower().endswith(".tar") or text.startswith("pipe:") or "://" in text:
        return True  # pipes and URLs: ShardSet.open says they are not read
    folder = Path(text).expanduser()
    if not folder.is_dir():
        return False
    if split and (folder / split).is_dir():
        folder = folder / split
    names = [p.name.lower() for p in folder.iterdir() if not p.name.startswith(".")]
    has_tar = any(n.endswith(".tar") for n in names)
    return has_tar and not any(os.path.splitext(n)[1] in IMAGE_EXTENSIONS for n in names)


def _count_samples(path: Path) -> tuple[int, list[str]]:
    """``(samples, member names)`` of tar ``path`` (samples: keys with an image member), from
    its headers only."""
    from webdataset.tariterators import base_plus_ext

    keys: set[str] = set()
    names: list[str] = []
    try:
        with tarfile.open(path, "r:") as tar:  # seekable: member data is skipped, not read
            for member in tar:
                names.append(member.name)
                key, ext = base_plus_ext(member.name) if member.isreg() else (None, None)
                if key is not None and ext.lower() in _IMAGE_SUFFIXES:
                    keys.add(key)
    except (tarfile.TarError, OSError) as error:
        raise ValueError(f"shard {path}: not a readable tar file ({error})") from None
    return len(keys), names


_warned_empty: set[str] = set()  # shards already reported by this process


def _warn_empty(path: str, why: str) -> None:
    """One ``warning:`` line per shard and process (a run opens its shards more than once)."""
    if path not in _warned_empty:
        _warned_empty.add(path)
        warn_unreadable(f"shard {path} {why}: left out")


def _refuse_remote(spec: str) -> None:
    """``pipe:`` commands and URLs are not read: one line saying what to do instead."""
    scheme = spec.split(":", 1)[0].lower() if ":" in spec else ""
    if scheme == "pipe" or (len(scheme) > 1 and "://" in spec):
        raise ValueError(
            f"{spec[:60]}{'...' if len(spec) > 60 else ''}: {scheme}: shards are not read "
            "(unimix streams local shard files, whose samples it counts to give every process "
            "the same steps); copy or mount them and name the files, e.g. "
            "'/data/shards/shard-{000000..000099}.tar'"
        )


def _refuse_special(paths: Iterable[str]) -> None:
    """Raise naming the first of ``paths`` that is no regular file (links followed): opening a
    FIFO named ``x.tar`` would block for ever, a folder or device is no shard either."""
    for path in paths:
        if not os.path.isfile(path):
            kind = "a folder, not a regular file" if os.path.isdir(path) else _not_regular(path)
            raise ValueError(
                f"shard {path}: {kind}; a shard must be a tar file (remove or rename it)"
            )


def _read_index(folder: Path) -> dict[str, Any]:
    path = folder / INDEX_NAME
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text())
    except ValueError:
        index = None
    if not isinstance(index, dict) or not isinstance(index.get("shards"), dict):
        raise ValueError(f"{path}: not a shard index (expected JSON with a 'shards' map)")
    return index


@dataclass(frozen=True)
class ShardSet:
    """Shard files (sorted), their sample counts and class names (``[]``: unknown/unlabeled)."""

    paths: tuple[str, ...]
    counts: tuple[int, ...]
    classes: tuple[str, ...] = ()

    @classmethod
    def open(cls, spec: str | os.PathLike[str], split: str = "") -> ShardSet:
        """Shards named by ``spec``: a brace pattern (``dir/shard-{000000..000009}.tar``), one
        ``.tar`` file, or a folder of ``.tar`` files (``<folder>/<split>/`` when it exists).
        Counts come from ``shards.json`` next to the shards, else from the tar headers.

        Raises:
            FileNotFoundError: no shard matches or a shard is missing (the message names it).
            ValueError: a shard is no regular file (a FIFO, a folder, ...: named, before any is
                opened) or no readable tar file.
        """
        text = os.path.expanduser(os.fspath(spec))
        if not os.path.exists(text):
            _refuse_remote(text)
        if os.path.isdir(text):
            folder = Path(text)
            if split and (folder / split).is_dir():
                folder = folder / split
            paths = sorted(str(p) for p in folder.glob("*.tar"))
            if not paths:
                raise FileNotFoundError(f"no .tar shards in folder {folder}")
        else:
            paths = sorted(_expand(text))
            missing = [p for p in paths if not os.path.exists(p)]
            if missing:
                raise FileNotFoundError(
                    f"shard {missing[0]} not found ({len(missing)} of {len(paths)} missing)"
                )
        _refuse_special(paths)
        kept, counts, classes = [], [], None
        indexes: dict[Path, dict[str, Any]] = {}
        for path in map(Path, paths):
            index = indexes.setdefault(path.parent, _read_index(path.parent))
            listed = index.get("shards", {}).get(path.name)
            if listed is not None:
                count, why = int(listed), f"has no image ({INDEX_NAME} lists 0 samples)"
            else:
                count, names = _count_samples(path)
                shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
                why = f"holds no image ({len(names)} members: {shown})" if names else "is empty"
            if classes is None and index:
                classes = tuple(index.get("classes", ()))
            if count == 0:  # it would shorten every epoch to its reader's other shards
                _warn_empty(str(path), why)
                continue
            kept.append(str(path))
            counts.append(count)
        if not counts:
            raise FileNotFoundError(f"the shards of {spec} hold no image samples")
        return cls(tuple(kept), tuple(counts), classes or ())

    @property
    def offsets(self) -> np.ndarray:
        """``[num_shards]`` global index of each shard's first sample."""
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def __len__(self) -> int:
        return int(sum(self.counts))


def shard_order(num_shards: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's permutation of shard numbers, a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch, _SHARD_SALT]).permutation(num_shards)


def reader_shards(
    num_shards: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    reader: int = 0,
    readers: int = 1,
) -> list[int]:
    """Shards read by ``reader`` (DataLoader worker) of process ``rank`` in ``epoch``: every
    ``world · readers``-th shard of :func:`shard_order`. The readers of all ranks partition the
    shards; each gets ``num_shards // (world · readers)`` or one more."""
    stride = world * readers
    return shard_order(num_shards, seed, epoch)[rank + world * reader :: stride].tolist()


@dataclass(frozen=True)
class ShardSample:
    """One encoded sample: global ``index``, ``name`` (``shard.tar:key.ext``), image bytes, label."""

    index: int
    name: str
    data: bytes
    label: int


def iter_shard_samples(shards: ShardSet, shard_ids: Sequence[int]) -> Iterator[ShardSample]:
    """The samples of ``shard_ids`` in order, read sequentially (one tar stream at a time).

    Raises:
        ValueError: a shard holds more samples than its count says.
    """
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    offsets = shards.offsets
    for s in shard_ids:
        path, position = shards.paths[s], 0
        with open(path, "rb") as stream:
            members = (dict(m, __url__=path) for m in tar_file_iterator(stream))
            try:
                for sample in group_by_keys(members):
                    ext = next((k for k in sample if k in _IMAGE_SUFFIXES), None)
                    if ext is None:
                        continue
                    if position >= shards.counts[s]:
                        raise ValueError(
                            f"shard {path} holds more than the {shards.counts[s]} samples its "
                            f"{INDEX_NAME} lists: rebuild the index or delete it to count again"
                        )
                    name = f"{os.path.basename(path)}:{sample['__key__']}.{ext}"
                    label = _label(sample.get("cls"), name)
                    yield ShardSample(int(offsets[s]) + position, name, sample[ext], label)
                    position += 1
            except (tarfile.TarError, OSError) as error:
                raise ValueError(f"shard {path}: damaged tar file ({_reason(error)})") from None
        if position < shards.counts[s]:
            raise ValueError(
                f"shard {path}: ends after {position} of the {shards.counts[s]} samples its "
                f"{INDEX_NAME} lists (cut short, or replaced): rebuild the shard and its index"
            )


def _reason(error: BaseException) -> str:
    text = str(error.args[0] if error.args else error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _label(cls: bytes | None, name: str) -> int:
    """The ``.cls`` member as an int (``-1`` without one)."""
    try:
        return int(cls.decode()) if cls is not None else -1
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{name}: label {cls[:20]!r} is not an integer") from None


def shuffle_buffer(items: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """``items`` shuffled through a buffer of ``size`` (each item yielded exactly once): once the
    buffer is full, each new item replaces a uniformly drawn one, which is yielded; the rest
    are yielded in a random order at the end. ``size <= 1``: unchanged order."""
    if size <= 1:
        yield from items
        return
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = int(rng.integers(size))
        buffer[j], item = item, buffer[j]
        yield item
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


def decode_image_bytes(data: bytes, name: str) -> Image.Image:
    """Encoded image bytes → 8-bit RGB, as :func:`~unimix.data.load_rgb` decodes files (EXIF
    orientation, 16-bit scaling, transparency over white).

    Raises:
        UnreadableImageError: naming ``name`` and the decoder's reason.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            warn_if_large(image, name)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return to_rgb(image)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, zlib errors…
        reason = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error))
        reason = reason or type(error).__name__
        raise UnreadableImageError(f"cannot decode image {name}: {reason}") from error


def decoded_samples(
    samples: Iterable[ShardSample], skipped: torch.Tensor | None = None, strict: bool = False
) -> Iterator[tuple[ShardSample, Image.Image]]:
    """``(sample, RGB image)`` for each decodable sample; an undecodable one is reported on one
    line (an :class:`~unimix.data.UnreadableImageWarning` naming ``shard.tar:key.ext``), counted
    in ``skipped[0]`` and skipped (``strict``: raised)."""
    for sample in samples:
        try:
            yield sample, decode_image_bytes(sample.data, sample.name)
        except UnreadableImageError as error:
            if strict:
                raise
            if skipped is not None:
                skipped[0] += 1
            reason = str(error).removeprefix(f"cannot decode image {sample.name}: ")
            warn_unreadable(f"skipping unreadable image {sample.name}: {reason}")


def buffer_rng(seed: int, epoch: int, rank: int, reader: int, restart: int) -> np.random.Generator:
    """The shuffle buffer's generator of one reader in one epoch (``restart``: the shard it
    started at, 0 unless resumed mid-epoch)."""
    return np.random.default_rng([seed, epoch, rank, reader, restart, _BUFFER_SALT])
