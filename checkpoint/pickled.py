"""The pickled files of a checkpoint (Accelerate's ``optimizer.bin``, ``random_states_<rank>.pkl``,
...): each must load with ``torch.load(weights_only=True)``, exactly as Accelerate will load it,
or the checkpoint is invalid.

A file holding anything but tensors, numbers, strings and containers of them (a crafted pickle
that would run code, an object of some class) is rejected before Accelerate reads it, with our
own message: never the advice to load it with ``weights_only=False``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

from .manifest import CheckpointError

__all__ = ["PICKLED_SUFFIXES", "check_pickled_files"]

#: Suffixes of the files Accelerate writes with ``torch.save`` (and reads with ``torch.load``).
PICKLED_SUFFIXES = (".bin", ".pkl", ".pt", ".pth")


def _load_weights_only(file: Path) -> None:
    """``torch.load(file, weights_only=True)`` with Accelerate's allowed globals (numpy's RNG
    state), memory-mapped so a large optimizer state is not read into memory."""
    from accelerate.utils import load

    load(os.fspath(file), map_location="cpu", mmap=True)


def check_pickled_files(path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming the first pickled file of checkpoint ``path`` that
    ``torch.load(weights_only=True)`` rejects or cannot read."""
    try:
        files = sorted(Path(path).iterdir())
    except OSError as err:  # moved aside by another process meanwhile, unreadable
        raise CheckpointError(f"{path}: unreadable ({err.strerror or err})") from None
    for file in files:
        if file.suffix not in PICKLED_SUFFIXES or not file.is_file():
            continue
        try:
            _load_weights_only(file)
        except Exception as err:
            if not isinstance(err, pickle.UnpicklingError) and "weights_only" not in str(err):
                raise CheckpointError(f"rejected {file}: {_unreadable(err, file)}") from None
            raise CheckpointError(
                f"rejected {file}: not a plain tensor file (refusing to unpickle it)"
            ) from None


def _unreadable(err: Exception, file: Path) -> str:
    """Why torch cannot read ``file``, in our words: torch's own messages run over several
    sentences, quote the path back and advise loading with other settings."""
    text = " ".join(str(err).split())
    with contextlib.suppress(OSError):
        if file.stat().st_size == 0:
            return "an empty file"
    if "_use_new_zipfile_serialization" in text:  # torch's mmap refusal of a non-zip file
        return (
            "not a tensor file in torch.save's zip format (a plain or old-format pickle, or "
            "other bytes; refusing to unpickle it)"
        )
    if "PytorchStreamReader" in text:  # e.g. "failed reading zip archive: failed finding ..."
        reason = text.split("PytorchStreamReader ", 1)[1].split(". ", 1)[0].rstrip(".")
        return f"a damaged zip archive ({reason})"
    first = text.split(". ", 1)[0].rstrip(".")
    if len(first) > 100:
        first = first[:100].rsplit(" ", 1)[0] + " ..."
    return f"unreadable tensor file ({type(err).__name__}: {first})"
