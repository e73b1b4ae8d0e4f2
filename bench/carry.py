"""Carry an image tree to a machine where only a few tens of MB of files travel: one blob of
the files' bytes, unchanged, and a gzipped JSON index (``[path, offset, size]`` each).

``python -m unimix.bench.carry pack ../shared/data/cifar10 .carry/cifar10`` (60,000 JPEGs →
about 55 MB, 2 files) here; ``python -m unimix.bench.carry unpack .carry/cifar10 /tmp/cifar10``
there (seconds). ``scripts/gpu_check.sh --prepare`` does the first.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
from pathlib import Path

__all__ = ["pack", "unpack"]

_BLOB, _INDEX = "images.bin", "index.json.gz"


def pack(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """Pack every file under ``src`` (sorted walk) into ``dst``; returns the file count."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    entries, offset = [], 0
    with open(dst / _BLOB, "wb") as blob:
        for folder, subfolders, names in os.walk(src):
            subfolders.sort()
            for name in sorted(names):
                path = Path(folder) / name
                data = path.read_bytes()
                blob.write(data)
                entries.append([path.relative_to(src).as_posix(), offset, len(data)])
                offset += len(data)
    with gzip.open(dst / _INDEX, "wt") as index:
        json.dump(entries, index)
    return len(entries)


def unpack(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
    """Write the files packed in ``src`` under ``dst``; returns the file count.

    Raises:
        ValueError: an index entry that would leave ``dst`` (an absolute path or ``..``).
    """
    src, dst = Path(src), Path(dst)
    with gzip.open(src / _INDEX, "rt") as index:
        entries = json.load(index)
    root = dst.resolve()
    with open(src / _BLOB, "rb") as blob:
        for rel, offset, size in entries:
            path = (dst / rel).resolve()
            if root not in path.parents:
                raise ValueError(f"{src / _INDEX}: entry {rel!r} is outside the target folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            blob.seek(offset)
            path.write_bytes(blob.read(size))
    return len(entries)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in ("pack", "unpack"):
        print("usage: python -m unimix.bench.carry pack|unpack SRC DST", file=sys.stderr)
        return 2
    count = (pack if argv[0] == "pack" else unpack)(argv[1], argv[2])
    print(f"{argv[0]}ed {count} files: {argv[1]} -> {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
