"""Atomic, verifiable checkpoints: write a directory under a temporary name with a manifest of
every file's size and SHA-256, then rename it; verify it before anything is loaded.

A kill during a write leaves the previous checkpoints untouched; a damaged checkpoint is
detected (the file and what is wrong named) before anything is read from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .layout import TRAINER_STATE, checkpoint_name, list_checkpoints
from .tensor_files import check_safetensors_files, default_file_mode
from .write_error import WRITE_ERRORS, CheckpointWriteError, describe_write_error

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "read_trainer_state",
    "verify_checkpoint",
    "write_checkpoint",
]

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
    files, mode = {}, default_file_mode()
    for p in sorted(tmp.iterdir()):
        if p.is_file():
            with contextlib.suppress(OSError):  # a file system without modes keeps its own
                os.chmod(p, mode)  # every writer's file as readable as the JSON beside it
            _fsync(p)
            files[p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    meta = {**state, "files": files}
    with open(tmp / TRAINER_STATE, "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync(tmp)


def _prepare(root: Path, tmp: Path) -> None:
    """Create ``tmp`` under ``root``, removing what killed runs left (``.tmp-*`` directories)."""
    root.mkdir(parents=True, exist_ok=True)
    for left in root.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(left, ignore_errors=True)
    tmp.mkdir()


def _publish(tmp: Path, final: Path, state: Mapping[str, Any]) -> None:
    """Seal ``tmp`` and rename it to ``final``; a checkpoint already at ``final`` (the same step
    saved again) is moved aside first and deleted only once the new one is in place."""
    _seal(tmp, state)
    old = final.with_name(f"{_TMP_PREFIX}old-{final.name}")
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old.exists():  # put the previous one back
            os.replace(old, final)
        raise
    _fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def _attempt(action: Callable[[], None]) -> BaseException | None:
    """Run ``action``; the write error it raised, or None."""
    try:
        action()
    except WRITE_ERRORS as err:
        return err
    return None


def _drop_tracebacks(error: BaseException | None) -> None:
    """Clear the tracebacks of ``error`` and its chain: their frames hold the failed writer."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__context__ or error.__cause__


def write_checkpoint(
    root: str | os.PathLike,
    step: int,
    write_files: Callable[[Path], None],
    state: Mapping[str, Any],
    *,
    is_main: bool,
    barrier: Callable[[], None],
    keep_last: int,
    all_ok: Callable[[bool], bool] | None = None,
    size_hint: Callable[[], int] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically; every process calls this.

    ``write_files(tmp_dir)`` runs on every process (Accelerate's ``save_state`` writes one RNG
    file per rank) after the main process created ``tmp_dir``. The main process then hashes
    every file into ``trainer_state.json`` (``state`` plus ``files``), fsyncs, renames the
    directory to ``step_<step>`` and only then deletes all but the newest ``keep_last``.

    A writer failing (disk full, read-only, ...) on any process: the temporary directory is
    removed, the previous checkpoints stay as they were, and every process raises
    :class:`CheckpointWriteError` (one line; ``size_hint()`` estimates the bytes needed).
    ``all_ok(ok)`` is a barrier that returns whether every process passed ``ok=True`` (default:
    ``barrier()``, then this process's ``ok``, enough for one process).
    """
    root = Path(root)
    final = root / checkpoint_name(step)
    tmp = root / f"{_TMP_PREFIX}{final.name}"
    if all_ok is None:
        all_ok = lambda ok: (barrier(), ok)[1]  # noqa: E731
    error = _attempt(lambda: _prepare(root, tmp)) if is_main else None
    if all_ok(error is None):
        error = _attempt(lambda: write_files(tmp))
        if all_ok(error is None):
            error = _attempt(lambda: _publish(tmp, final, state)) if is_main else None
            if all_ok(error is None):
                if is_main:  # only now that the new one is complete
                    for old in list_checkpoints(root)[:-keep_last]:
                        shutil.rmtree(old, ignore_errors=True)
                return final
    message = f"checkpoint {final} not written: another process failed"
    if error is not None:  # described before the partial files are removed (free space)
        needs = size_hint() if size_hint is not None else None
        message = describe_write_error(error, final, tmp, needs)
        _drop_tracebacks(error)  # frees the failed writer: its open file gives the space back
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    raise CheckpointWriteError(message)


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
    """Check that every file listed in ``trainer_state.json`` is present and unchanged, and that
    every safetensors file opens (a file written short matches its checksum too).

    Returns the trainer state. Raises :class:`CheckpointError` naming the first bad file.
    """
    path = Path(path)
    state = read_trainer_state(path)
    files = state.get("files")
    if not isinstance(files, dict) or not files:
        raise CheckpointError(f"{path / TRAINER_STATE}: no file manifest")
    for name, expected in files.items():
        file = path / name
        try:
            _check_file(file, expected)
        except OSError as err:  # unreadable, or moved away while we read it
            raise CheckpointError(f"{file}: unreadable ({err.strerror or err})") from None
    for file, reason in check_safetensors_files(path):
        raise CheckpointError(f"{file}: not a readable safetensors file ({reason})")
    return state


def _check_file(file: Path, expected: Mapping[str, Any]) -> None:
    """Raise :class:`CheckpointError` unless ``file`` has the manifest's size and SHA-256."""
    if not isinstance(expected, Mapping) or not {"bytes", "sha256"} <= expected.keys():
        raise CheckpointError(f"{file.parent / TRAINER_STATE}: bad manifest entry {file.name!r}")
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    size = file.stat().st_size
    if size != expected["bytes"]:
        raise CheckpointError(f"{file}: {size} bytes, expected {expected['bytes']}")
    if _sha256(file) != expected["sha256"]:
        raise CheckpointError(f"{file}: content changed since it was written (checksum mismatch)")
