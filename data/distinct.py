"""Whether a k-NN bank and its queries are the same images: a labeled folder without ``train/``
and ``test/`` serves every split from the folder itself, and a bank that holds every query
scores ~100% whatever the features (each query finds itself).

Two files are the same when they have the same name in the same folder, folders compared by
(device, inode): a link to a folder (``test -> train``) counts as the folder it points to. One
``stat`` per folder, none per file, so a million-image bank is checked in a blink.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .skips import warn_unreadable

__all__ = ["check_distinct", "shared_files"]


def _folder_key(folder: str, cache: dict[str, tuple[int, int] | str]) -> tuple[int, int] | str:
    if folder not in cache:
        try:
            st = os.stat(folder)
            cache[folder] = (st.st_dev, st.st_ino)
        except OSError:
            cache[folder] = os.path.realpath(folder)
    return cache[folder]


def _keys(files: Sequence[str], cache: dict[str, Any]) -> set[tuple[Any, str]]:
    return {(_folder_key(os.path.dirname(f), cache), os.path.basename(f)) for f in files}


def shared_files(bank: Any, queries: Any) -> int | None:
    """How many of ``queries``' images are also ``bank`` images (the same file; for streamed
    shards, the samples of the same shard files), or None when that cannot be told (a dataset
    without a ``files`` list of paths, e.g. torchvision's)."""
    if bank is queries:
        return len(queries)
    bank_shards, query_shards = getattr(bank, "shards", None), getattr(queries, "shards", None)
    if hasattr(bank_shards, "paths") and hasattr(query_shards, "paths"):  # ShardDatasets
        return _shared_shard_samples(bank_shards, query_shards)
    bank_files, query_files = getattr(bank, "files", None), getattr(queries, "files", None)
    if not isinstance(bank_files, list) or not isinstance(query_files, list):
        return None
    cache: dict[str, Any] = {}
    in_bank = _keys(bank_files, cache)
    return sum(key in in_bank for key in _keys(query_files, cache))


def _shared_shard_samples(bank: Any, queries: Any) -> int:
    """Samples of the ``queries`` ShardSet's shards that are also ``bank`` shards: the same files,
    links resolved (a shard set has thousands of files at most, not millions)."""
    in_bank = {os.path.realpath(path) for path in bank.paths}
    pairs = zip(queries.paths, queries.counts, strict=True)
    return sum(count for path, count in pairs if os.path.realpath(path) in in_bank)


def check_distinct(bank: Any, queries: Any, what: str, hint: str) -> None:
    """Refuse (ValueError, one line starting with ``what`` and ending with ``hint``) a bank that
    holds every query; warn in one line when it holds some of them."""
    shared = shared_files(bank, queries)
    if not shared:
        return
    n = len(queries)
    # where each set's images are: a folder's root, a shard set's spec
    places = [getattr(d, "root", None) or getattr(d, "spec", None) for d in (bank, queries)]
    roots = {os.path.realpath(p) for p in places if p}
    if shared == n:
        if len(roots) == 1 and all(places):
            same = f"the k-NN bank and its queries are the same {n} images, of {roots.pop()}"
        else:
            same = f"the k-NN bank holds all {n} queries (the same files)"
        raise ValueError(
            f"{what}: {same}, so every query would find itself and score ~100%: {hint}"
        )
    warn_unreadable(
        f"{what}: {shared} of the {n} k-NN queries are also bank images (the same files): "
        "their neighbours include themselves, so the score is inflated"
    )
