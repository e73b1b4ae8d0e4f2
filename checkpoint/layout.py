"""Where a checkpoint's files live and what they are called: the one place that names them.

Layout (written by :mod:`unimix.ssl.engine.training_state`, read by :func:`unimix.checkpoint.load_backbone`)::

    <output_dir>/checkpoints/step_00000123/
        model.safetensors, optimizer.bin, random_states_<rank>.pkl, ...   (Accelerate save_state)
        student.safetensors, teacher.safetensors   full networks (backbone + head), strict keys
        dino_state.safetensors         the loss centre
        teacher_backbone.safetensors   clean keys: loads strictly into
        student_backbone.safetensors     create_dino_backbone(meta["backbone"], **kwargs)
        backbone.json                  {"backbone", "backbone_kwargs", "num_features", "image_size",
                                        "mean", "std", "step"}
        trainer_state.json             {"step", "epoch", "world_size", ..., "files": {name: sha256}}
                                       written last: a directory without it is not a checkpoint
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BACKBONE_META",
    "CHECKPOINTS_DIR",
    "DAMAGED_DIR",
    "DINO_STATE",
    "TRAINER_STATE",
    "WHICH",
    "backbone_file",
    "checkpoint_name",
    "list_checkpoints",
    "network_file",
]

#: Folder of a run's output directory that holds its checkpoints.
CHECKPOINTS_DIR = "checkpoints"
#: The manifest, written last: step, epoch, world size, ... and every file's size and SHA-256.
TRAINER_STATE = "trainer_state.json"
#: What rebuilds the backbone: preset name, kwargs, feature width, image size, normalisation.
BACKBONE_META = "backbone.json"
#: Folder of ``checkpoints/`` where damaged checkpoints are moved when none is valid.
DAMAGED_DIR = "damaged"
#: The DINO loss centre.
DINO_STATE = "dino_state.safetensors"
#: The two networks a checkpoint holds.
WHICH = ("teacher", "student")

_PREFIX = "step_"


def checkpoint_name(step: int) -> str:
    """``step_00000123``: the folder name of the checkpoint written after ``step`` steps."""
    return f"{_PREFIX}{step:08d}"


def network_file(which: str) -> str:
    """File of the whole ``"teacher"`` / ``"student"`` network (backbone + head)."""
    return f"{which}.safetensors"


def backbone_file(which: str) -> str:
    """File of the ``"teacher"`` / ``"student"`` backbone alone, with clean keys."""
    return f"{which}_backbone.safetensors"


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Checkpoint directories under ``root`` (``<output>/checkpoints``), oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX) :].isdigit():
            found.append((int(p.name[len(_PREFIX) :]), p))
    return [p for _, p in sorted(found)]
