"""What went wrong while writing a checkpoint, in one line: a full disk is named as such (with the
size the checkpoint needs), anything else names the checkpoint and the OS error.

The writers fail in their own ways: ``OSError`` (``json``, ``open``), ``RuntimeError`` from
torch's zip writer (``[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598``
when the disk fills up) and ``SafetensorError`` (``I/O error: No space left on device (os error
28)``).
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from safetensors import SafetensorError

__all__ = ["WRITE_ERRORS", "CheckpointWriteError", "describe_write_error", "is_disk_full"]

#: Exceptions the checkpoint writers raise when a file cannot be written.
WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, SafetensorError)

# What torch's and safetensors' writers say when a write comes back short: the disk is full.
_DISK_FULL_TEXT = ("no space left on device", "os error 28", "unexpected pos", "file write failed")


class CheckpointWriteError(OSError, ValueError):
    """A checkpoint could not be written; the temporary directory is already removed and the
    previous checkpoints are untouched. ``str(err)`` is one line naming the checkpoint.

    Also a ValueError (as :class:`io.UnsupportedOperation` is), so the CLIs that report bad
    input in one line with exit code 2 report it the same way."""


def is_disk_full(err: BaseException, where: Path, needs_bytes: int | None = None) -> bool:
    """Whether ``err`` (raised while writing under ``where``) means the device is full: ENOSPC,
    a writer's text for it, or less free space under ``where`` than ``needs_bytes``."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(text in str(err).lower() for text in _DISK_FULL_TEXT):
        return True
    if needs_bytes:
        try:
            return shutil.disk_usage(where).free < needs_bytes
        except OSError:
            return False
    return False


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0].strip()}" if text else type(err).__name__


def describe_write_error(
    err: BaseException, final: Path, where: Path, needs_bytes: int | None = None
) -> str:
    """One line for ``err``, raised while writing checkpoint ``final`` (in progress in ``where``).

    ``no space left on device while writing <final> (needs ~N MB)`` for a full disk (N from
    ``needs_bytes`` when given); else ``could not write checkpoint <final>: <OS error>``.
    """
    if is_disk_full(err, where if where.exists() else where.parent, needs_bytes):
        needs = f" (needs ~{max(1, -(-needs_bytes // 2**20))} MB)" if needs_bytes else ""
        return f"no space left on device while writing {final}{needs}"
    if isinstance(err, OSError) and err.strerror:
        file = f" ({os.fsdecode(err.filename)})" if err.filename else ""
        return f"could not write checkpoint {final}: {err.strerror}{file}"
    return f"could not write checkpoint {final}: {_first_line(err)}"
