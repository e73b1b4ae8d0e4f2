"""Safetensors files: written with the mode any new file gets (safetensors' own writer creates
them 0600 whatever the umask, so a run shared with a group could not be read), and checked
when read back: each file of a checkpoint must open (its header read and checked against the
file's size by safetensors itself) or the checkpoint is invalid.

The manifest's checksums say a file is what was written, not that it is whole: a file written
short (a copy cut off before the manifest was made, a writer that lost the end of it) matches
its checksum and still cannot be loaded. Only headers are read, never the tensors.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = ["check_safetensors_files", "default_file_mode", "save_safetensors"]


def default_file_mode() -> int:
    """The permission bits ``open()`` gives a new file here: ``0o666`` less the umask."""
    try:  # Linux: read it without changing it
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)  # elsewhere: set and put back at once
    os.umask(umask)
    return 0o666 & ~umask


def save_safetensors(
    tensors: dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> None:
    """``safetensors.torch.save_file``, the file then given :func:`default_file_mode` (the mode
    of the JSON files written beside it)."""
    save_file(tensors, os.fspath(path), metadata=metadata)
    with contextlib.suppress(OSError):  # a file system without modes keeps its own
        os.chmod(path, default_file_mode())


def check_safetensors_files(path: str | os.PathLike) -> list[tuple[Path, str]]:
    """``[(file, reason)]`` for each ``*.safetensors`` file of checkpoint ``path`` that
    safetensors cannot open (header unreadable or not covering the file); empty when all open."""
    bad = []
    for file in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(os.fspath(file), framework="pt") as f:
                f.keys()
        except Exception as err:  # SafetensorError, OSError: what safetensors says is the reason
            text = str(err).strip().splitlines()
            bad.append((file, text[0] if text else type(err).__name__))
    return bad
