"""Which checkpoint to read: the newest valid one of a run, or the weights a path points at;
where damaged ones are set aside."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from .layout import (
    BACKBONE_META,
    CHECKPOINTS_DIR,
    DAMAGED_DIR,
    WHICH,
    backbone_file,
    list_checkpoints,
)
from .manifest import CheckpointError, verify_checkpoint
from .pickled import check_pickled_files

__all__ = ["find_resume_checkpoint", "resolve_weights", "set_aside"]

logger = logging.getLogger("unimix.checkpoint")


def find_resume_checkpoint(
    output_dir: str | os.PathLike, warn: bool = True, *, pickled: bool = False
) -> Path | None:
    """The newest valid checkpoint under ``<output_dir>/checkpoints``, or None if there is none.

    Damaged or incomplete checkpoints are skipped with a warning naming what is wrong. With
    ``pickled`` (resuming, where Accelerate unpickles them) a checkpoint is also invalid when one
    of its pickled files is rejected by ``torch.load(weights_only=True)``.
    """
    for path in reversed(list_checkpoints(Path(output_dir) / CHECKPOINTS_DIR)):
        try:
            verify_checkpoint(path)
            if pickled:
                check_pickled_files(path)
        except CheckpointError as err:
            if warn:
                logger.warning(
                    "skipping checkpoint %s: %s; falling back to the previous one", path.name, err
                )
            continue
        return path
    return None


def set_aside(checkpoints: Sequence[Path]) -> Path | None:
    """Move damaged ``checkpoints`` (``.../checkpoints/step_*``) into ``.../checkpoints/damaged/``
    (a name taken there gets ``.1``, ``.2``, ...): kept for inspection, out of the way of a
    fresh run and of later resumes. Returns that folder (None when there was nothing to move)."""
    if not checkpoints:
        return None
    aside = checkpoints[0].parent / DAMAGED_DIR
    aside.mkdir(exist_ok=True)
    for path in checkpoints:
        target, n = aside / path.name, 0
        while target.exists():
            n += 1
            target = aside / f"{path.name}.{n}"
        os.replace(path, target)
    return aside


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
