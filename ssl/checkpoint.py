"""Atomic, verifiable checkpoints and the choice of which one to resume from.

Layout (the contract read by ``unimix.eval.load_backbone``)::

    <output_dir>/checkpoints/step_00000123/
        model.safetensors, optimizer.bin, random_states_<rank>.pkl, ...   (Accelerate save_state)
        teacher.safetensors            full teacher (backbone + head), strict keys
        dino_state.safetensors         the loss centre
        teacher_backbone.safetensors   clean keys: loads strictly into
        student_backbone.safetensors     create_backbone(meta["backbone"], num_classes=0, **kwargs)
        backbone.json                  {"backbone", "backbone_kwargs", "num_features", "image_size",
                                        "mean", "std", "step"}
        trainer_state.json             {"step", "epoch", "world_size", ..., "files": {name: sha256}}
                                       written last: a directory without it is not a checkpoint

Each checkpoint is written under a temporary name, fsynced, then renamed, so a kill during a
write leaves the previous checkpoints untouched; ``trainer_state.json`` records the size and
SHA-256 of every file, so a damaged checkpoint is detected before anything is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open

__all__ = [
    "CheckpointError",
    "TRAINER_STATE",
    "check_keys",
    "find_resume_checkpoint",
    "list_checkpoints",
    "read_trainer_state",
    "verify_checkpoint",
    "write_checkpoint",
]

logger = logging.getLogger("unimix.ssl")

TRAINER_STATE = "trainer_state.json"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint directory is incomplete or damaged."""


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(
    root: str | os.PathLike,
    step: int,
    write_files: Callable[[Path], None],
    state: Mapping[str, Any],
    *,
    is_main: bool,
    barrier: Callable[[], None],
    keep_last: int,
) -> Path:
    """Write checkpoint ``step`` atomically; every process calls this.

    ``write_files(tmp_dir)`` runs on every process (Accelerate's ``save_state`` writes one RNG
    file per rank) after the main process created ``tmp_dir``. The main process then hashes
    every file into ``trainer_state.json`` (``state`` plus ``files``), fsyncs, renames the
    directory to ``step_<step>`` and deletes all but the newest ``keep_last`` checkpoints.
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f"{_TMP_PREFIX}{final.name}"
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left by a run killed while saving
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()
    write_files(tmp)
    barrier()
    if is_main:
        files = {}
        for p in sorted(tmp.iterdir()):
            if p.is_file():
                _fsync(p)
                files[p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
        meta = {**state, "files": files}
        state_path = tmp / TRAINER_STATE
        with open(state_path, "w") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync(tmp)
        if final.exists():  # same step saved again (e.g. the end of a resumed, finished run)
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def read_trainer_state(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer_state.json`` of checkpoint directory ``path``."""
    state_path = Path(path) / TRAINER_STATE
    try:
        return json.loads(state_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no {TRAINER_STATE} (incomplete checkpoint)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{state_path}: unreadable ({err})") from None


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Check that every file listed in ``trainer_state.json`` is present and unchanged.

    Returns the trainer state. Raises :class:`CheckpointError` naming the first bad file.
    """
    path = Path(path)
    state = read_trainer_state(path)
    files = state.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path / TRAINER_STATE}: no file manifest")
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: missing")
        if file.stat().st_size != expected["bytes"]:
            raise CheckpointError(
                f"{file}: {file.stat().st_size} bytes, expected {expected['bytes']}"
            )
        if _sha256(file) != expected["sha256"]:
            raise CheckpointError(
                f"{file}: content changed since it was written (checksum mismatch)"
            )
    return state


def find_resume_checkpoint(output_dir: str | os.PathLike, warn: bool = True) -> Path | None:
    """The newest valid checkpoint under ``<output_dir>/checkpoints``, or None if there is none.

    Damaged or incomplete checkpoints are skipped with a warning naming what is wrong.
    """
    for path in reversed(list_checkpoints(Path(output_dir) / "checkpoints")):
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


def check_keys(expected: Iterable[str], file: str | os.PathLike, what: str) -> None:
    """Raise ValueError listing missing and unexpected keys of safetensors ``file`` vs ``expected``."""
    with safe_open(os.fspath(file), framework="pt") as f:
        found = set(f.keys())
    expected = set(expected)
    if found == expected:
        return
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    parts = []
    if missing:
        parts.append(
            f"missing {len(missing)}: {', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}"
        )
    if unexpected:
        parts.append(
            f"unexpected {len(unexpected)}: {', '.join(unexpected[:20])}{' ...' if len(unexpected) > 20 else ''}"
        )
    raise ValueError(
        f"{file}: {what} keys do not match this run's model ({'; '.join(parts)}); "
        "was it written with another model.backbone / model.head config?"
    )
