"""How unreadable image files are reported and left out, the same way in every command.

A file that cannot be decoded is reported once, as one clean line (``warning: skipping unreadable
image PATH: reason``) written through ``tqdm.write`` so a progress bar is cleared and redrawn
around it instead of being broken; no source line is echoed. The lines are still
:class:`~unimix.data.decode.UnreadableImageWarning` warnings, so ``warnings`` filters silence
them or make them errors (importing this module sets ``warnings.showwarning`` to a function
that formats this one category so and passes every other warning to the previous one). Only
the process that owns the progress bar prints: files found by
DataLoader workers are announced by the main process (:func:`announce_skipped`, called after
each batch). A run ends with one summary line: :func:`summary_line`.

:func:`skipped_mask` says which items of a dataset (through ``Subset`` / ``DatasetSubset`` /
transform wrappers) were found unreadable, so evaluation drops their rows from feature banks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from .decode import UnreadableImageError, UnreadableImageWarning, load_rgb

__all__ = [
    "SkipLog",
    "announce_skipped",
    "base_indices",
    "mark_reported",
    "skipped_mask",
    "summary_line",
    "warn_unreadable",
]

_previous_showwarning = warnings.showwarning


def _show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """``warnings.showwarning`` for unreadable images: ``warning: <message>`` on one line via
    ``tqdm.write`` (no ``file:line:`` prefix, no source echo); other warnings as before."""
    if not issubclass(category, UnreadableImageWarning):
        _previous_showwarning(message, category, filename, lineno, file, line)
        return
    from tqdm import tqdm

    text = " ".join(str(message).split("\n"))
    with contextlib.suppress(OSError, ValueError):  # stderr closed at exit: nothing to do
        tqdm.write(f"warning: {text}", file=file or sys.stderr)


_show._unimix = True  # type: ignore[attr-defined]
if not getattr(warnings.showwarning, "_unimix", False):
    warnings.showwarning = _show


def warn_unreadable(text: str) -> None:
    """Issue ``text`` as an :class:`UnreadableImageWarning` (shown as one clean line)."""
    warnings.warn(text, UnreadableImageWarning, stacklevel=2)


def summary_line(count: int, total: int, first: str, root: str, outcome: str) -> str:
    """``skipped 4 unreadable images (first: PATH): 4 of 191 images under ROOT were skipped
    and <outcome>``."""
    plural = "" if count == 1 else "s"
    return (
        f"skipped {count} unreadable image{plural} (first: {first}): {count} of {total} images "
        f"under {root} were skipped and {outcome}"
    )


class SkipLog:
    """The unreadable files of one list of files: which were found (a byte per file in shared
    memory, so DataLoader workers' findings reach the main process), which were announced, and
    how many the last summary counted. Holds no reference to its dataset (its finalizer does
    not keep the dataset alive)."""

    def __init__(self, root: str, files: Sequence[str]) -> None:
        self.root, self.files = root, files
        self.bad = torch.zeros(len(files), dtype=torch.uint8).share_memory_()
        self.announced = np.zeros(len(files), dtype=bool)  # by this process
        self.reasons: dict[int, str] = {}  # found by this process: index -> decoder message
        self.reported = 0  # count in the last summary
        self.owner_pid = os.getpid()

    def found(self, index: int, error: Exception) -> None:
        """Record that file ``index`` is unreadable; announced at once outside loader workers."""
        self.bad[index] = 1
        prefix = f"cannot decode image {self.files[index]}: "
        self.reasons[index] = str(error).removeprefix(prefix)
        if get_worker_info() is None:
            self.announce()

    def announce(self) -> int:
        """One line per file found unreadable and not announced yet; returns how many. A no-op
        in DataLoader workers (the main process announces what they found)."""
        if get_worker_info() is not None or int(self.bad.sum()) == int(self.announced.sum()):
            return 0
        new = np.flatnonzero(self.bad.numpy().astype(bool) & ~self.announced)
        for i in new.tolist():
            self.announced[i] = True
            reason = self.reasons.get(i) or _reason(self.files[i])
            warn_unreadable(f"skipping unreadable image {self.files[i]}: {reason}")
        return len(new)

    def summarize(self, outcome: str) -> int:
        """Announce, then one summary line if more files were found since the last one;
        returns the number found so far."""
        self.announce()
        count = int(self.bad.sum())
        if count > self.reported:
            self.reported = count
            first = self.files[int(np.flatnonzero(self.bad.numpy())[0])]
            warn_unreadable(summary_line(count, len(self.files), first, self.root, outcome))
        return count

    def finish(self, outcome: str) -> None:
        """Finalizer: the summary when the dataset dies or the program exits (owner only)."""
        if os.getpid() == self.owner_pid and get_worker_info() is None:
            self.summarize(outcome)


def _reason(path: str) -> str:
    """The decoder's reason for a file found unreadable in another process (decoded again)."""
    try:
        load_rgb(path)
    except UnreadableImageError as error:
        return str(error).removeprefix(f"cannot decode image {path}: ")
    return "failed in a DataLoader worker (readable now)"


def base_indices(dataset: Any) -> tuple[Any, np.ndarray]:
    """``(base dataset, index [len(dataset)] int64)``: item ``i`` of ``dataset`` is item
    ``index[i]`` of ``base``, through ``torch.utils.data.Subset``, ``DatasetSubset`` (both
    ``.dataset`` + ``.indices``) and transform wrappers (``.base``)."""
    index = np.arange(len(dataset), dtype=np.int64)
    while True:
        if hasattr(dataset, "indices") and hasattr(dataset, "dataset"):
            index = np.asarray(dataset.indices, dtype=np.int64)[index]
            dataset = dataset.dataset
        elif hasattr(dataset, "base") and hasattr(dataset, "transform"):
            dataset = dataset.base
        else:
            return dataset, index


def _base(dataset: Any) -> Any:
    """The dataset under ``Subset`` / ``DatasetSubset`` / transform wrappers."""
    while True:
        if hasattr(dataset, "indices") and hasattr(dataset, "dataset"):
            dataset = dataset.dataset
        elif hasattr(dataset, "base") and hasattr(dataset, "transform"):
            dataset = dataset.base
        else:
            return dataset


def skipped_mask(dataset: Any) -> np.ndarray:
    """``[len(dataset)]`` bool: items whose file was found unreadable so far (by this process
    or its DataLoader workers). All False for datasets without files (arrays, synthetic)."""
    base, index = base_indices(dataset)
    log = getattr(base, "skip_log", None)
    if not isinstance(log, SkipLog):
        return np.zeros(len(index), dtype=bool)
    return log.bad.numpy()[index].astype(bool)


def announce_skipped(dataset: Any) -> None:
    """Print a line for each unreadable file found since the last call (e.g. by a DataLoader
    worker); call it from the main process, after each batch. Datasets without files: no-op."""
    log = getattr(_base(dataset), "skip_log", None)
    if isinstance(log, SkipLog):
        log.announce()


def mark_reported(dataset: Any) -> None:
    """Count everything found so far in ``dataset``'s files as summarized (its caller printed
    its own summary), so no second summary follows at exit."""
    log = getattr(_base(dataset), "skip_log", None)
    if isinstance(log, SkipLog):
        log.announce()
        log.reported = int(log.bad.sum())
