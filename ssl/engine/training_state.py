"""Training checkpoints: what only the trainer needs on top of :mod:`unimix.checkpoint`.

Saving writes the Accelerate state (optimizer, grad scaler, every process's RNG states), both
networks with clean keys, the loss centre, the two backbones and ``backbone.json``, atomically
(:func:`unimix.checkpoint.write_checkpoint`: a failed write on any process removes the
temporary folder and raises one line). Restoring verifies the manifest and that every pickled
file loads with ``torch.load(weights_only=True)``, checks keys and shapes before loading
anything, and returns the step to continue from.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from safetensors.torch import load_file, save_file
from torch import nn

from ...checkpoint import (
    BACKBONE_META,
    CHECKPOINTS_DIR,
    DINO_STATE,
    CheckpointError,
    backbone_file,
    check_keys,
    check_pickled_files,
    find_resume_checkpoint,
    list_checkpoints,
    network_file,
    read_trainer_state,
    set_aside,
    unwrapped_key,
    verify_checkpoint,
    write_checkpoint,
)
from ..loss import DINOLoss
from ..model import DINOModel

__all__ = [
    "check_resume_settings",
    "resolve_resume",
    "restore_training_checkpoint",
    "save_training_checkpoint",
]

logger = logging.getLogger("unimix.ssl")


def resolve_resume(resume: str | os.PathLike | None, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: ``None`` (fresh; an output dir with checkpoints is an
    error), ``"auto"`` (newest valid one, if any) or a checkpoint directory (verified).

    Valid means: the manifest's sizes and checksums match, and every pickled file loads with
    ``torch.load(weights_only=True)`` (an invalid one is skipped with a warning). When ``"auto"``
    finds checkpoints but none is valid, the run starts from step 0 with one warning, and the
    main process moves the damaged ones into ``checkpoints/damaged/``.
    """
    if resume is None:
        existing = list_checkpoints(output_dir / CHECKPOINTS_DIR)
        if existing:
            raise ValueError(
                f"output dir {output_dir} already holds checkpoints (newest {existing[-1].name}); "
                "pass --resume auto to continue it or choose another --output-dir"
            )
        return None
    if os.fspath(resume) == "auto":
        found = find_resume_checkpoint(output_dir, pickled=True)
        if found is None:
            _set_aside_damaged(output_dir / CHECKPOINTS_DIR)
        return found
    path = Path(resume)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume {path}: no such checkpoint directory")
    try:
        verify_checkpoint(path)
        check_pickled_files(path)
    except CheckpointError as err:
        raise ValueError(f"--resume {path}: {err}") from None
    return path


def check_resume_settings(checkpoint: Path, batch_size: int, seed: int) -> None:
    """Refuse (ValueError, one line naming both values) resuming ``checkpoint`` with another
    ``data.batch_size`` (steps per epoch, so every schedule, would jump) or ``seed`` (another
    data order and augmentation): the run would no longer continue the one it resumes.
    Values the manifest does not record are not compared.

    Raises:
        CheckpointError: its ``trainer_state.json`` cannot be read.
    """
    state = read_trainer_state(checkpoint)
    if not isinstance(state, dict):
        return  # not a manifest: verify_checkpoint rejects it, naming the file
    changed = [
        f"{key}={state[saved]} (this run: {key}={now})"
        for key, saved, now in (
            ("data.batch_size", "batch_size", batch_size),
            ("seed", "seed", seed),
        )
        if saved in state and state[saved] != now
    ]
    if changed:
        raise ValueError(
            f"{checkpoint.name} was written with {' and '.join(changed)}; resuming with other "
            "values would not continue that run (schedules and data order change): set them back, "
            "or start a new run in another output_dir"
        )


def _set_aside_damaged(root: Path) -> None:
    """None of the checkpoints under ``root`` is valid: say so in one line and (main process)
    move them into ``root/damaged``, so a fresh run neither writes beside nor trips on them."""
    damaged = list_checkpoints(root)
    if not damaged:
        return
    names = ", ".join(p.name for p in damaged)
    where = f"the damaged ones ({names}) stay in place"
    if PartialState().is_main_process:
        try:
            where = f"moved the damaged ones ({names}) to {set_aside(damaged)}"
        except OSError as err:
            where = f"could not move the damaged ones ({names}) aside: {err.strerror or err}"
    logger.warning("no valid checkpoint in %s; starting from step 0; %s", root, where)


def _clean_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state on the CPU, keyed as the plain module would be (no ``_orig_mod.`` from
    torch.compile, no ``module.`` from DDP): a compiled run's checkpoint loads into an
    uncompiled model and the other way round."""
    return {
        unwrapped_key(k): v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()
    }


def _load_clean(module: nn.Module, file: Path, name: str, device: str) -> None:
    """Load clean-keyed ``file`` into ``module`` (compiled or not), strictly."""
    own = {unwrapped_key(k): k for k in module.state_dict()}
    shapes = {key: value.shape for key, value in module.state_dict().items()}
    check_keys({k: shapes[own[k]] for k in own}, file, name)  # keys and shapes, before loading
    state = load_file(str(file), device=device)
    module.load_state_dict({own[k]: v for k, v in state.items()}, strict=True)


def save_training_checkpoint(
    root: Path,
    step: int,
    accelerator: Accelerator,
    networks: dict[str, DINOModel],
    loss_fn: DINOLoss,
    backbone_meta: dict[str, Any],
    state: dict[str, Any],
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` under ``root`` (every process calls this); returns its path.

    ``networks``: ``{"teacher": ..., "student": ...}``; ``backbone_meta`` is written as
    ``backbone.json`` (``step`` added); ``state`` goes into the manifest.
    """

    def write_files(tmp: Path) -> None:
        accelerator.save_state(str(tmp), safe_serialization=True)
        if not accelerator.is_main_process:
            return
        for which in ("student", "teacher"):
            save_file(_clean_state(networks[which]), str(tmp / network_file(which)))
        save_file({"center": loss_fn.center.detach().cpu()}, str(tmp / DINO_STATE))
        for which in ("teacher", "student"):
            save_file(_clean_state(networks[which].backbone), str(tmp / backbone_file(which)))
        meta = {**backbone_meta, "step": step}
        (tmp / BACKBONE_META).write_text(json.dumps(meta, indent=1))

    return write_checkpoint(
        root,
        step,
        write_files,
        state,
        is_main=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        keep_last=keep_last,
        all_ok=lambda ok: _all_ok(accelerator, ok),
        size_hint=lambda: _checkpoint_bytes(accelerator, networks, loss_fn),
    )


def _all_ok(accelerator: Accelerator, ok: bool) -> bool:
    """Whether every process passed ``ok=True``; a barrier (a collective) with several."""
    if accelerator.num_processes == 1:
        return ok
    failed = torch.tensor([0 if ok else 1], device=accelerator.device)
    return int(accelerator.reduce(failed, reduction="sum").item()) == 0


def _checkpoint_bytes(
    accelerator: Accelerator, networks: dict[str, DINOModel], loss_fn: DINOLoss
) -> int:
    """Bytes of the tensors a checkpoint holds: both networks, both backbones, the centre and
    the optimizer state (what a full disk must make room for)."""
    tensors = [loss_fn.center]
    for network in networks.values():
        tensors += [*network.state_dict().values(), *network.backbone.state_dict().values()]
    for optimizer in getattr(accelerator, "_optimizers", []):
        for entry in optimizer.state_dict()["state"].values():
            tensors += [v for v in entry.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def restore_training_checkpoint(
    path: Path, accelerator: Accelerator, networks: dict[str, DINOModel], loss_fn: DINOLoss
) -> int:
    """Restore everything from checkpoint ``path``; returns the step to continue from."""
    state = verify_checkpoint(path)
    # safetensors takes "cpu", not the "cpu:0" a multi-machine CPU run's device prints as
    device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)
    for name in ("student", "teacher"):
        _load_clean(networks[name], path / network_file(name), name, device)
    center = load_file(str(path / DINO_STATE))["center"]
    if center.shape != loss_fn.center.shape:
        raise ValueError(
            f"{path}: centre has shape {tuple(center.shape)}, this run's head.out_dim needs "
            f"{tuple(loss_fn.center.shape)}"
        )
    loss_fn.center.copy_(center)
    try:
        accelerator.load_state(str(path))
    except pickle.UnpicklingError:  # changed since resolve_resume checked it
        raise ValueError(
            f"rejected {path}: a pickled file is not a plain tensor file (refusing to unpickle it)"
        ) from None
    if state.get("world_size") != accelerator.num_processes:
        logger.warning(
            "resuming a %s-process checkpoint with %s processes: data order and losses are "
            "unchanged, random states of dropout/drop-path are not restored exactly",
            state.get("world_size"),
            accelerator.num_processes,
        )
    return int(state["step"])
