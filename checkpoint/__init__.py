"""The checkpoint format, owned once: file names, the manifest, finding and reading checkpoints,
loading weights. Written by :mod:`unimix.ssl` (training), read by :mod:`unimix.eval` and tools.

Public API::

    from unimix.checkpoint import (list_checkpoints, find_resume_checkpoint, verify_checkpoint,
                                   check_pickled_files, set_aside, read_trainer_state,
                                   write_checkpoint, CheckpointWriteError, load_backbone)
"""

from .find import find_resume_checkpoint, resolve_weights, set_aside
from .layout import (
    BACKBONE_META,
    CHECKPOINTS_DIR,
    DAMAGED_DIR,
    DINO_STATE,
    TRAINER_STATE,
    WHICH,
    backbone_file,
    checkpoint_name,
    list_checkpoints,
    network_file,
)
from .manifest import (
    CheckpointError,
    CheckpointWriteError,
    read_trainer_state,
    verify_checkpoint,
    write_checkpoint,
)
from .pickled import check_pickled_files
from .tensor_files import check_safetensors_files, default_file_mode, save_safetensors
from .weights import (
    check_keys,
    clean_state_dict,
    load_backbone,
    load_strict,
    read_backbone_meta,
    unwrapped_key,
)

__all__ = [
    "BACKBONE_META",
    "CHECKPOINTS_DIR",
    "DAMAGED_DIR",
    "DINO_STATE",
    "TRAINER_STATE",
    "WHICH",
    "CheckpointError",
    "CheckpointWriteError",
    "backbone_file",
    "check_keys",
    "check_pickled_files",
    "check_safetensors_files",
    "checkpoint_name",
    "clean_state_dict",
    "default_file_mode",
    "find_resume_checkpoint",
    "list_checkpoints",
    "load_backbone",
    "load_strict",
    "network_file",
    "read_backbone_meta",
    "read_trainer_state",
    "resolve_weights",
    "save_safetensors",
    "set_aside",
    "unwrapped_key",
    "verify_checkpoint",
    "write_checkpoint",
]
