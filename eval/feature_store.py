"""A feature bank on disk: ``features.f32`` (``[N, D]`` float32, row-major), ``labels.i64``
(``[N]`` int64) and ``store.json`` (``n``, ``dim``, ``complete``).

Extraction streams rows into the files (``os.pwrite`` at each row's offset, so several processes
can fill one store on a shared filesystem, each its own rows), and readers map the file
(``np.memmap``) one chunk at a time: the bank never has to be in memory, and a chunk's pages
leave the process's resident set when its map is closed. This is what keeps peak memory near
one bank's size on ImageNet-scale k-NN (an approximate index holds one copy; nothing else does).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["FeatureStore"]

FEATURES, LABELS, META = "features.f32", "labels.i64", "store.json"


class FeatureStore:
    """An ``[N, D]`` float32 bank and its ``[N]`` int64 labels in a directory."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.directory}: no feature store ({META} missing)")
        meta = json.loads(meta_path.read_text())
        self.n, self.dim = int(meta["n"]), int(meta["dim"])
        self.shape = (self.n, self.dim)

    # ------------------------------------------------------------------ writing
    @classmethod
    def allocate(cls, directory: str | os.PathLike, n: int, dim: int) -> FeatureStore:
        """Create (or truncate) the files at their final size, not yet marked complete."""
        if n < 1 or dim < 1:
            raise ValueError(f"feature store: expected n, dim >= 1, got {n}, {dim}")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / META).write_text(json.dumps({"n": n, "dim": dim, "complete": False}))
        for name, itemsize in ((FEATURES, 4 * dim), (LABELS, 8)):
            with open(directory / name, "wb") as f:
                f.truncate(n * itemsize)
        return cls(directory)

    def write(self, start: int, features: np.ndarray, labels: np.ndarray) -> None:
        """Rows ``start .. start + len(features)``: features ``[B, D]``, labels ``[B]``."""
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"feature store: expected [B, {self.dim}], got {features.shape}")
        if start < 0 or start + features.shape[0] > self.n:
            raise ValueError(f"feature store: rows {start}+{features.shape[0]} exceed {self.n}")
        labels = np.ascontiguousarray(labels, dtype=np.int64).reshape(-1)
        for name, array, itemsize in ((FEATURES, features, 4 * self.dim), (LABELS, labels, 8)):
            fd = os.open(self.directory / name, os.O_WRONLY)
            try:
                os.pwrite(fd, array.tobytes(), start * itemsize)
            finally:
                os.close(fd)

    def drop_rows(self, drop: np.ndarray, chunk: int = 32768) -> None:
        """Remove the rows where ``drop`` (``[N]`` bool) is True: later rows move up in place,
        chunk by chunk, and the files shrink to the rows kept (``n`` too; call before
        :meth:`mark_complete`, in one process)."""
        drop = np.asarray(drop, dtype=bool).reshape(-1)
        if drop.shape[0] != self.n:
            raise ValueError(f"feature store: drop mask of {drop.shape[0]} rows for {self.n}")
        labels, row = self.labels(), 0
        for start in range(0, self.n, chunk):
            keep = ~drop[start : start + chunk]
            rows = self.rows(start, start + chunk)[keep]
            if rows.shape[0]:  # writes land below `start + chunk`: rows already read
                self.write(row, rows, labels[start : start + chunk][keep])
            row += rows.shape[0]
        for name, itemsize in ((FEATURES, 4 * self.dim), (LABELS, 8)):
            os.truncate(self.directory / name, row * itemsize)
        self.n, self.shape = row, (row, self.dim)

    def mark_complete(self) -> None:
        """Record that every row is written (:meth:`is_complete` reads it back)."""
        meta = {"n": self.n, "dim": self.dim, "complete": True}
        tmp = self.directory / (META + ".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.directory / META)

    @staticmethod
    def is_complete(directory: str | os.PathLike) -> bool:
        """Whether ``directory`` holds a store whose every row was written, whole: marked
        complete, with files of the sizes ``n`` and ``dim`` give (see :meth:`damage`)."""
        return FeatureStore.damage(directory) is None

    @staticmethod
    def damage(directory: str | os.PathLike) -> str | None:
        """Why ``directory`` holds no complete store (``"not complete"``, an unreadable
        ``store.json``, a file cut short), or None when it does."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / META).read_text())
            n, dim, complete = int(meta["n"]), int(meta["dim"]), bool(meta.get("complete"))
        except FileNotFoundError:
            return f"no {META}"
        except (OSError, ValueError, KeyError, TypeError) as err:
            return f"{META} unreadable ({type(err).__name__})"
        if not complete:
            return "not complete"
        for name, size in ((FEATURES, 4 * n * dim), (LABELS, 8 * n)):
            try:
                found = (directory / name).stat().st_size
            except OSError as err:
                return f"{name}: {err.strerror or err}"
            if found != size:
                return f"{name}: {found} bytes, expected {size}"
        return None

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self.n

    def _map(self) -> np.memmap:
        return np.memmap(self.directory / FEATURES, np.float32, "r", shape=self.shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` ``[stop - start, D]``, read into a new array (no map stays
        resident: one copy of the chunk in memory)."""
        start, stop = max(0, start), min(self.n, stop)
        count = max(0, stop - start) * self.dim
        data = np.fromfile(
            self.directory / FEATURES, np.float32, count, offset=start * self.dim * 4
        )
        return data.reshape(-1, self.dim)

    def chunks(self, rows: int = 32768) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, features [<=rows, D])`` over the bank in order, one chunk in memory."""
        for start in range(0, self.n, rows):
            yield start, self.rows(start, min(self.n, start + rows))

    def labels(self) -> np.ndarray:
        """All labels ``[N]`` int64 (8 bytes a row: small next to the features)."""
        return np.fromfile(self.directory / LABELS, dtype=np.int64, count=self.n)

    def memmap(self) -> np.memmap:
        """The whole bank as a read-only map ``[N, D]`` (pages load as they are read)."""
        return self._map()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.directory)!r}, n={self.n}, dim={self.dim})"
