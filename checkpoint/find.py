"""Which checkpoint to read: the newest valid one of a run, or the weights a path points at."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .layout import BACKBONE_META, CHECKPOINTS_DIR, WHICH, backbone_file, list_checkpoints
from .manifest import CheckpointError, verify_checkpoint

__all__ = ["find_resume_checkpoint", "resolve_weights"]

logger = logging.getLogger("unimix.checkpoint")


def find_resume_checkpoint(output_dir: str | os.PathLike, warn: bool = True) -> Path | None:
    """The newest valid checkpoint under ``<output_dir>/checkpoints``, or None if there is none.

    Damaged or incomplete checkpoints are skipped with a warning naming what is wrong.
    """
    for path in reversed(list_checkpoints(Path(output_dir) / CHECKPOINTS_DIR)):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            if warn:
                logger.warning(
                    "skipping checkpoint %s: %s; falling back to the previous one", path.name, err
                )
            continue
        return path
    return None


def resolve_weights(path: Path, which: str) -> tuple[Path, Path]:
    """(weights file, backbone.json) for a checkpoint dir, an output dir or a .safetensors file."""
    if which not in WHICH:
        raise ValueError(f"which: expected 'teacher' or 'student', got {which!r}")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: expected a .safetensors file or a checkpoint directory")
        meta = path.with_name(BACKBONE_META)
        if not meta.is_file():
            raise FileNotFoundError(f"{meta}: missing (it describes the backbone of {path.name})")
        return path, meta
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint, output directory or file")
    if (path / CHECKPOINTS_DIR).is_dir():  # an output dir: its newest valid checkpoint
        newest = find_resume_checkpoint(path)
        if newest is None:
            raise FileNotFoundError(f"{path / CHECKPOINTS_DIR}: no valid checkpoint")
        path = newest
    weights = path / backbone_file(which)
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing (is {path} a unimix checkpoint?)")
    meta = path / BACKBONE_META
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: missing")
    return weights, meta
