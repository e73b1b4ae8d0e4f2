"""Images in a folder: an ImageFolder tree (``root/<class>/<image>``) or a flat unlabeled folder.

Listing walks the tree with ``os.scandir`` (no per-file ``stat``: 50,000 CIFAR JPEGs list in
well under a second), following symbolic links. Only regular files (or links to them) are
images: a FIFO, socket or device named ``x.png`` would block or never end a read, so it is
skipped with one ``warning:`` line, as is a broken link. A folder met twice in one walk (a
link back to an ancestor, ``a/up -> ..``, or a second link to the same folder) is skipped with
one warning line, so a loop cannot multiply the images. Files are decoded lazily in ``__getitem__``; a file that cannot be decoded
is reported once on one line (naming it; :mod:`~unimix.data.skips`), remembered in a bitmap
shared with DataLoader workers, and replaced by the next readable image, so one bad file never
stops a run (evaluation then drops those rows: :func:`~unimix.data.skips.skipped_mask`).
``strict=True`` raises instead. ``cache=True`` decodes everything once at construction (in threads) and keeps the
uint8 pixels in RAM — worth it for many epochs over small images (CIFAR-10 train: 150 MB).
"""

from __future__ import annotations

import logging
import os
import stat
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .decode import IMAGE_EXTENSIONS, UnreadableImageError, load_rgb
from .skips import SkipLog, summary_line, warn_unreadable

__all__ = ["ImageFolderDataset", "list_image_files"]

_log = logging.getLogger(__name__)
#: What a training run does in place of a skipped file (the summary line's ending).
REPLACED = "each replaced by the next readable image"


def _is_image_name(name: str) -> bool:
    # Hidden files are skipped on purpose: macOS "._x.jpg" resource forks are not images.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _warn_skipped(path: str, why: str) -> None:
    warn_unreadable(f"skipping {path}: {why}")


def _not_regular(path: str) -> str:
    """Why ``path`` (an image name that is no regular file) is skipped."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        if os.path.islink(path):
            return f"a broken symbolic link ({err.strerror or err})"
        return f"cannot be read ({err.strerror or err})"
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return f"{kind}, not a regular file"
    return "not a regular file"


def _folder_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _scan(folder: str) -> tuple[list[str], list[str]]:
    """(sorted visible subfolder names, sorted image file names) directly inside ``folder``:
    links followed; image names that are not regular files are skipped with a warning."""
    folders, images = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows symlinks, like ImageFolder
                folders.append(entry.name)
            elif _is_image_name(entry.name):
                if entry.is_file():  # the listing's file type: no stat unless a link
                    images.append(entry.name)
                else:
                    _warn_skipped(entry.path, _not_regular(entry.path))
    return sorted(folders), sorted(images)


def list_image_files(directory: str | os.PathLike[str], outside: tuple[str, ...] = ()) -> list[str]:
    """All image files under ``directory`` (recursively, symlinks followed), sorted: each
    folder's own images, then its subfolders' in name order (``os.walk``'s top-down order).

    Hidden files and folders (name starting with ``.``) are ignored; so are files whose suffix
    is not in :data:`~unimix.data.decode.IMAGE_EXTENSIONS` (case-insensitive). An image name
    that is not a regular file (FIFO, socket, device, broken link), a folder that cannot be
    read, and a folder already walked (a link loop such as ``a/up -> ..``, a second link to the
    same folder) or one of ``outside`` (e.g. the dataset root above a class folder) are each
    skipped with one ``warning:`` line.
    """
    # By hand rather than os.walk: the walk must know which entries are regular files (the
    # DirEntry types os.walk drops) and each folder's (device, inode) to see loops.
    top = os.fspath(directory)
    seen = {fid for fid in map(_folder_id, outside) if fid is not None}
    found: list[str] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        fid = _folder_id(folder)
        if fid in seen:
            _warn_skipped(
                folder,
                f"a link to {os.path.realpath(folder)}, a folder already listed (a symlink loop "
                "or a second link to it)",
            )
            continue
        if fid is not None:
            seen.add(fid)
        try:
            subfolders, images = _scan(folder)
        except OSError as err:
            if folder == top:
                raise
            _warn_skipped(folder, f"cannot list this folder ({err.strerror or err})")
            continue
        found.extend(os.path.join(folder, n) for n in images)
        stack.extend(os.path.join(folder, d) for d in reversed(subfolders))
    return found


class ImageFolderDataset(Dataset):
    """Images from a folder, as ``(image, label)`` pairs.

    Layouts (``labeled=None`` detects which):

    - **ImageFolder tree** ``root/<class>/<image>`` (images may sit in nested subfolders of a
      class folder): classes are the sorted class-folder names and label ``i`` is
      ``classes[i]``, exactly like ``torchvision.datasets.ImageFolder``.
    - **Flat folder** of images: unlabeled, every label is ``-1`` and ``classes`` is empty.
    - ``labeled=False`` takes every image under ``root`` recursively, unlabeled.

    Args:
        root: folder to read.
        labeled: ``True`` requires class folders, ``False`` ignores them, ``None`` detects.
        transform: applied to the PIL RGB image; ``None`` returns the PIL image.
        strict: raise :class:`UnreadableImageError` on the first undecodable file instead of
            warning and substituting the next readable image.
        cache: decode every image once now and keep uint8 pixels in RAM; undecodable files are
            dropped (warned about) at construction. Meant for small images.
        cache_threads: decoder threads for ``cache=True`` (default: CPU count, at most 8).

    Raises:
        FileNotFoundError: ``root`` does not exist, holds no images, or a class folder is empty.
        NotADirectoryError: ``root`` is a file.
        ValueError: ``root`` mixes top-level images with class folders and ``labeled`` is None.

    Items: ``(transform(image) or PIL RGB image, label: int)``. Attributes: ``root``,
    ``files`` (paths), ``classes`` (``list[str]``), ``targets`` (``list[int]``),
    ``num_skipped`` and ``skipped_files`` (undecodable files met so far, in any worker).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        labeled: bool | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        strict: bool = False,
        cache: bool = False,
        cache_threads: int | None = None,
    ) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.transform = transform
        self.strict = strict
        self.files, self.targets, self.classes = self._index(self.root, labeled)
        self._pixels: np.ndarray | list[np.ndarray] | None = None
        if cache:
            self._fill_cache(cache_threads)
        # One byte per file, in shared memory so DataLoader workers' discoveries reach the main
        # process (torch pickles shared tensors by handle, for fork and spawn workers alike).
        self.skip_log = SkipLog(self.root, self.files)
        self._finalizer = weakref.finalize(self, self.skip_log.finish, REPLACED)

    # ----------------------------------------------------------------------------- listing
    @staticmethod
    def _index(root: str, labeled: bool | None) -> tuple[list[str], list[int], list[str]]:
        if not os.path.exists(root):
            raise FileNotFoundError(f"dataset folder not found: {root}")
        if not os.path.isdir(root):
            raise NotADirectoryError(f"dataset path is a file, expected a folder: {root}")
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        if labeled is False:
            files = list_image_files(root)
            if not files:
                raise FileNotFoundError(f"no images ({extensions}) found under {root}")
            return files, [-1] * len(files), []

        folders, top_images = _scan(root)
        if labeled is None and not folders:
            if not top_images:
                raise FileNotFoundError(f"no images ({extensions}) found in {root}")
            return [os.path.join(root, n) for n in top_images], [-1] * len(top_images), []
        if not folders:
            raise FileNotFoundError(f"no class folders (root/<class>/<image>) found in {root}")
        if labeled is None and top_images:
            raise ValueError(
                f"{root} has both class folders ({len(folders)}) and {len(top_images)} images "
                f"directly inside it (e.g. {top_images[0]}): move those images into class "
                "folders, or pass labeled=False to use every image without labels"
            )
        files: list[str] = []
        targets: list[int] = []
        for label, name in enumerate(folders):
            class_files = list_image_files(os.path.join(root, name), outside=(root,))
            if not class_files:
                raise FileNotFoundError(
                    f"class folder {os.path.join(root, name)} contains no images ({extensions})"
                )
            files.extend(class_files)
            targets.extend([label] * len(class_files))
        return files, targets, folders

    # ------------------------------------------------------------------------------ cache
    def _fill_cache(self, threads: int | None) -> None:
        n = len(self.files)
        threads = max(1, min(threads or min(os.cpu_count() or 1, 8), n))
        bounds = np.linspace(0, n, threads + 1).astype(int)

        def decode_range(start: int, stop: int) -> list[np.ndarray | UnreadableImageError]:
            out: list[np.ndarray | UnreadableImageError] = []
            for path in self.files[start:stop]:
                try:
                    out.append(np.asarray(load_rgb(path)))
                except UnreadableImageError as error:
                    if self.strict:
                        raise
                    out.append(error)
            return out

        _log.info("decoding %d images under %s into memory", n, self.root)
        with ThreadPoolExecutor(threads) as pool:  # PIL releases the GIL while decoding
            parts = list(pool.map(decode_range, bounds[:-1], bounds[1:]))
        decoded = [item for part in parts for item in part]
        failed = [i for i, item in enumerate(decoded) if isinstance(item, UnreadableImageError)]
        for i in failed:
            warn_unreadable(f"skipping unreadable image {self.files[i]}: {decoded[i]}")
        if failed:
            bad = set(failed)
            first = self.files[failed[0]]
            warn_unreadable(
                summary_line(len(failed), n, first, self.root, "left out of the dataset")
            )
            keep = [i for i in range(n) if i not in bad]
            if not keep:
                raise UnreadableImageError(f"none of the {n} images under {self.root} decodes")
            self.files = [self.files[i] for i in keep]
            self.targets = [self.targets[i] for i in keep]
            decoded = [decoded[i] for i in keep]
        arrays: list[np.ndarray] = decoded  # type: ignore[assignment]  (errors removed above)
        if len({a.shape for a in arrays}) == 1:
            arrays = [np.stack(arrays)]  # one block: no per-image objects to copy-on-write
        for block in arrays:
            block.flags.writeable = False  # items are views of the cache: keep it intact
        self._pixels = arrays[0] if len(arrays) == 1 and arrays[0].ndim == 4 else arrays

    # ---------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.files)

    def _check_index(self, index: int) -> int:
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        return index % n

    def _decode_first_readable(self, index: int) -> tuple[Image.Image, int]:
        """Decode ``index`` or, if it is unreadable, the next readable index (cyclically)."""
        n = len(self.files)
        for step in range(n):
            j = (index + step) % n
            if self.skip_log.bad[j]:
                continue
            try:
                return load_rgb(self.files[j]), j
            except UnreadableImageError as error:
                if self.strict:
                    raise UnreadableImageError(
                        f"{error} (strict mode; without it unreadable files are skipped)"
                    ) from error
                self.skip_log.found(j, error)
        raise UnreadableImageError(f"none of the {n} images under {self.root} can be decoded")

    @property
    def cached(self) -> bool:
        """Whether the pixels are held in memory (``cache=True``) rather than read from files."""
        return self._pixels is not None

    def get_uint8(self, index: int) -> np.ndarray:
        """Pixels of item ``index``: a new ``[H, W, 3]`` uint8 array (substitution as in ``[]``)."""
        index = self._check_index(index)
        if self._pixels is not None:
            return np.array(self._pixels[index])
        return np.asarray(self._decode_first_readable(index)[0])

    def __getitem__(self, index: int) -> tuple[Any, int]:
        index = self._check_index(index)
        if self._pixels is not None:
            image, served = Image.fromarray(self._pixels[index]), index
        else:
            image, served = self._decode_first_readable(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[served]

    # ---------------------------------------------------------------------- bad-file report
    @property
    def num_skipped(self) -> int:
        """Number of distinct files found undecodable so far (by this process or its workers)."""
        return int(self.skip_log.bad.sum())

    @property
    def skipped_files(self) -> list[str]:
        """Paths of the files found undecodable so far, in dataset order."""
        return [self.files[i] for i in torch.nonzero(self.skip_log.bad).flatten().tolist()]

    def report_skipped(self) -> int:
        """Announce files found by loader workers, then one summary line if files were found
        since the last summary (call at the end of an epoch); returns the total skipped.

        Whatever is still unreported when the dataset is garbage-collected or the program exits
        is reported then, so a run always ends with the count.
        """
        return self.skip_log.summarize(REPLACED)

    def __getstate__(self) -> dict[str, Any]:
        # The finalizer is not picklable and belongs to the creating process only.
        state = self.__dict__.copy()
        state["_finalizer"] = None
        return state

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.classes else "unlabeled"
        cached = ", cached" if self._pixels is not None else ""
        return f"{type(self).__name__}({self.root!r}, {len(self)} images, {kind}{cached})"
