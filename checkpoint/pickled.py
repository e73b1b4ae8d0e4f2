"""The pickled files of a checkpoint (Accelerate's ``optimizer.bin``, ``random_states_<rank>.pkl``,
...): each must load with ``torch.load(weights_only=True)``, exactly as Accelerate will load it,
or the checkpoint is invalid.

A file holding anything but tensors, numbers, strings and containers of them (a crafted pickle
that would run code, an object of some class) is rejected before Accelerate reads it, with our
own message: never the advice to load it with ``weights_only=False``.
"""

from __future__ import annotations

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
                first = (str(err).strip().splitlines() or [""])[0][:120]
                raise CheckpointError(
                    f"rejected {file}: unreadable tensor file ({type(err).__name__}: {first})"
                ) from None
            raise CheckpointError(
                f"rejected {file}: not a plain tensor file (refusing to unpickle it)"
            ) from None
