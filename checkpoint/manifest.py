"""Atomic, verifiable checkpoints: write a directory under a temporary name with a manifest of
every file's size and SHA-256, then rename it; verify it before anything is loaded.

A kill during a write leaves the previous checkpoints untouched; a damaged checkpoint is
detected (the file and what is wrong named) before anything is read from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .layout import TRAINER_STATE, checkpoint_name, list_checkpoints

__all__ = ["CheckpointError", "read_trainer_state", "verify_checkpoint", "write_checkpoint"]

_TMP_PREFIX = ".tmp-"


class CheckpointError(RuntimeError):
    """A checkpoint directory is incomplete or damaged."""


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


def _seal(tmp: Path, state: Mapping[str, Any]) -> None:
    """Hash every file of ``tmp`` into its ``trainer_state.json`` (``state`` plus ``files``)."""
    files = {}
    for p in sorted(tmp.iterdir()):
        if p.is_file():
            _fsync(p)
            files[p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    meta = {**state, "files": files}
    with open(tmp / TRAINER_STATE, "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)


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
        _seal(tmp, state)
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
