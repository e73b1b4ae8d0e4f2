"""Convert an image folder into WebDataset tar shards (the ``unimix shards`` command's work).

Images are written in a seeded random order across the whole folder, so every stretch of a
shard mixes the classes. Each image is checked first (decoded, never re-encoded): one that
cannot be read or decoded is skipped with one ``warning:`` line instead of being copied. Each
is stored as its original bytes under a numeric key, the position in the written order, with
its label as ``<key>.cls`` (labeled trees only). ``shards.json`` next to the shards keeps the
class names and each shard's sample count, by file name only. A shard is written under a
hidden temporary name and renamed once complete, and the index is rewritten (atomically) after
each one: a write error leaves only whole shards, all listed, and one line saying how far it
got. Run again into the same folder, it leaves exactly its own ``PREFIX-NNNNNN.tar`` shards:
listed ones it did not rewrite are removed; unlisted ones (not ours) are refused before writing.
A folder holding split folders (``train/``, ``test/``, ...) gets one set of shards per split,
``OUT/<split>/``, with the same classes. Format and reasons: docs/data.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .image_folder import ImageFolderDataset
from .shards import INDEX_NAME, decode_image_bytes
from .skips import warn_unreadable

__all__ = ["SPLIT_NAMES", "ShardWriteError", "split_folders", "write_shards"]

#: Folder names taken for splits, not classes, when they are all a folder holds.
SPLIT_NAMES = frozenset({"train", "test", "val", "valid", "validation"})


class ShardWriteError(OSError, ValueError):
    """A shard or the index could not be written; ``str(err)`` is one line saying what is
    complete. Also a ValueError, so the command reports it as one ``error:`` line."""


def split_folders(folder: str | os.PathLike[str]) -> list[str]:
    """The split folders of ``folder`` (``["test", "train"]``) when every visible subfolder is
    one (a name in :data:`SPLIT_NAMES`) holding class folders; ``[]`` for a class tree or a
    flat folder.

    Raises:
        ValueError: split folders next to other folders (neither one layout nor the other).
    """
    root = Path(folder)
    if not root.is_dir():
        return []
    subfolders = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".")
    splits = [name for name in subfolders if name.lower() in SPLIT_NAMES]
    if not splits or not any(any(q.is_dir() for q in (root / s).iterdir()) for s in splits):
        return []
    others = sorted(set(subfolders) - set(splits))
    if others:
        raise ValueError(
            f"{root} holds split folders ({', '.join(splits)}) next to other folders "
            f"({', '.join(others[:3])}): convert one split at a time (unimix shards "
            f"{root / splits[0]} OUT/{splits[0]})"
        )
    return splits


def _write_index(out: Path, index: dict[str, Any]) -> None:
    index["num_samples"] = sum(index["shards"].values())
    tmp = out / f".{INDEX_NAME}.tmp"
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, out / INDEX_NAME)


def _numbered(prefix: str) -> re.Pattern[str]:
    """The names the converter gives ``prefix``'s shards: ``PREFIX-000000.tar``, ..."""
    return re.compile(rf"{re.escape(prefix)}-\d{{6,}}\.tar")


def _start_index(out: Path, classes: list[str], prefix: str) -> dict[str, Any]:
    """``out/shards.json`` as found (an existing index must have the same classes), or new.

    Raises:
        ValueError: ``out`` holds ``PREFIX-NNNNNN.tar`` files the index does not list (not
            ours: this run would overwrite them or leave them beside its own shards).
    """
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
    _refuse_unlisted(out, index["shards"], prefix)
    return index


def _refuse_unlisted(out: Path, listed: dict[str, int], prefix: str) -> None:
    """Raise naming a ``PREFIX-NNNNNN.tar`` file in ``out`` that the index does not list."""
    ours = _numbered(prefix)
    unlisted = sorted(
        p.name for p in out.iterdir() if ours.fullmatch(p.name) and p.name not in listed
    )
    if unlisted:
        more = len(unlisted) - 1
        others = f" (nor {'are' if more > 1 else 'is'} {more} other {prefix}-NNNNNN.tar file"
        others = f"{others}{'s' * (more > 1)})" if more else ""
        raise ValueError(
            f"{out / unlisted[0]} is not listed in {out / INDEX_NAME}{others}: not a shard written "
            "here by unimix shards, this run would overwrite it or leave it beside its own shards; "
            f"remove {'them' if more else 'it'} or choose another output folder"
        )


def _remove_stale(out: Path, index: dict[str, Any], prefix: str, written: list[str]) -> None:
    """Delete the ``PREFIX-NNNNNN.tar`` shards an earlier run wrote (listed in the index) that
    this run did not rewrite, files first, then their entries; one line says how many."""
    ours, rewritten = _numbered(prefix), set(written)
    stale = sorted(n for n in index["shards"] if ours.fullmatch(n) and n not in rewritten)
    for name in stale:
        try:
            (out / name).unlink(missing_ok=True)
        except OSError as err:
            _write_index(out, index)
            raise ShardWriteError(
                f"cannot remove {out / name}, a shard of an earlier run that this run did not "
                f"rewrite: {err.strerror or err}; this run's {len(written)} shard(s) are complete "
                "and listed: remove it by hand"
            ) from None
        del index["shards"][name]
    if stale:
        _write_index(out, index)
        names, plural = stale[0] + (f" … {stale[-1]}" if len(stale) > 1 else ""), len(stale) > 1
        print(
            f"removed {len(stale)} stale shard{'s' * plural} from {out} ({names}): written by an "
            f"earlier run, beyond the {len(written)} this run wrote",
            flush=True,
        )


def _checked(
    files: Sequence[str], order: np.ndarray, threads: int
) -> Iterator[tuple[int, str, bytes]]:
    """``(file number, suffix, bytes)`` of each readable, decodable file, in ``order`` (suffix:
    lower case, no dot, the member's extension); the others are
    reported on one line each and left out. Files are read and decoded ``threads`` at a time
    (PIL releases the GIL while decoding), a bounded window ahead of the writer."""

    def check(i: int) -> tuple[int, bytes | None]:
        path = files[i]
        try:
            data = Path(path).read_bytes()
            decode_image_bytes(data, path)
        except OSError as err:  # unreadable file, broken link, or UnreadableImageError
            reason = str(err) if err.strerror is None else err.strerror
            reason = reason.removeprefix(f"cannot decode image {path}: ")
            warn_unreadable(f"skipping unreadable image {path}: {reason}")
            return i, None
        return i, data

    window = 4 * threads
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(order), window):
            for i, data in pool.map(check, order[start : start + window].tolist()):
                if data is not None:
                    yield i, os.path.splitext(files[i])[1].lstrip(".").lower(), data


def _check_naming(shard_size: int, prefix: str) -> None:
    if shard_size < 1:
        raise ValueError(f"--shard-size must be at least 1, got {shard_size}")
    if not prefix or os.sep in prefix or "{" in prefix or prefix.startswith("."):
        raise ValueError(f"--prefix must be a plain file name stem, got {prefix!r}")


def _listed(
    folder: str | os.PathLike[str], labeled: bool | None, classes: Sequence[str] | None
) -> ImageFolderDataset:
    """The folder's images, refused when ``classes`` (another split's) differ from its own."""
    images = ImageFolderDataset(folder, labeled=labeled)
    if classes is not None and list(classes) != list(images.classes):
        differ = sorted(set(classes) ^ set(images.classes))
        raise ValueError(
            f"{folder} has other classes than the split before it ({', '.join(differ[:3])} in "
            "one only): the labels would not match; give every split the same class folders"
        )
    return images


def _output_folder(out: str | os.PathLike[str]) -> Path:
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output {out_dir} is a file, expected a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ShardWriteError(f"cannot create {out_dir}: {err.strerror or err}") from None
    return out_dir


def write_shards(
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    shard_size: int = 1000,
    prefix: str = "shard",
    labeled: bool | None = None,
    seed: int = 0,
    threads: int | None = None,
    classes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write the images of ``folder`` (ImageFolder tree or flat folder, as
    :class:`~unimix.data.ImageFolderDataset` lists them) into ``out/<prefix>-NNNNNN.tar``.

    Files are taken in the order of ``numpy.random.default_rng(seed).permutation`` of the
    listing; each that decodes becomes sample ``k`` (its position among those written), key
    ``f"{k:09d}"``, members ``<key>.<original suffix>`` and, when labeled, ``<key>.cls`` (the
    label as text). Members carry a fixed mtime: the same folder and seed give byte-identical
    shards. ``threads``: files checked at once (default: CPUs, at most 8). ``classes``: the
    class names the folder must have (another split's), checked before anything is written.
    ``PREFIX-NNNNNN.tar`` shards that ``shards.json`` lists from an earlier run and this run
    did not rewrite are deleted at the end (one printed line says how many); shards of other
    prefixes stay, listed.

    Returns:
        The index written to ``out/shards.json``: ``classes``, ``shards`` (file name → samples)
        and ``num_samples``.

    Raises:
        FileNotFoundError / NotADirectoryError / ValueError: as ImageFolderDataset for the
            folder; ValueError for ``shard_size < 1``, an index with other classes in ``out``,
            ``PREFIX-NNNNNN.tar`` files in ``out`` that its index does not list (not ours:
            never overwritten or deleted), or no readable image at all.
        ShardWriteError: a write failed (full disk, read-only, ...); the complete shards stay,
            listed in ``shards.json``, and no partial one is left.
    """
    _check_naming(shard_size, prefix)
    images = _listed(folder, labeled, classes)
    out_dir = _output_folder(out)
    index = _start_index(out_dir, list(images.classes), prefix)
    order = np.random.default_rng(seed).permutation(len(images.files))
    threads = max(1, min(threads or os.cpu_count() or 1, 8))
    samples = _checked(images.files, order, threads)
    written, names = 0, []
    for number in range((len(order) + shard_size - 1) // shard_size):
        name = f"{prefix}-{number:06d}.tar"
        count = _write_shard(out_dir, name, samples, written, shard_size, images.targets, index)
        if count == 0:
            break
        written += count
        names.append(name)
    if written == 0:
        raise ValueError(f"{folder}: none of its {len(order)} images could be read")
    _remove_stale(out_dir, index, prefix, names)
    return index


def _write_shard(
    out: Path,
    name: str,
    samples: Iterator[tuple[int, str, bytes]],
    first: int,
    size: int,
    targets: Sequence[int],
    index: dict[str, Any],
) -> int:
    """Write up to ``size`` of ``samples`` (keys from ``first``) as ``out/name``, then list it in
    the index; returns how many it holds (0: none was left, nothing written)."""
    from webdataset import TarWriter

    tmp = out / f".{name}.tmp"
    count = 0
    try:
        with open(tmp, "wb") as stream, TarWriter(stream, encoder=False, mtime=0.0) as tar:
            for i, suffix, data in samples:
                sample: dict[str, Any] = {"__key__": f"{first + count:09d}", suffix: data}
                if targets[i] >= 0:
                    sample["cls"] = str(targets[i]).encode()
                tar.write(sample)
                count += 1
                if count == size:
                    break
        if count:
            os.replace(tmp, out / name)
            index["shards"][name] = count
            _write_index(out, index)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        listed = index["shards"]
        full = err.errno in (errno.ENOSPC, errno.EDQUOT)
        what = "no space left on device" if full else err.strerror or str(err)
        raise ShardWriteError(
            f"{what} while writing {out / name}: {len(listed)} complete shard(s) "
            f"({sum(listed.values())} images) are listed in {out / INDEX_NAME}, no partial shard "
            "is left; make room and run the command again"
        ) from None
    finally:
        if not count:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return count
