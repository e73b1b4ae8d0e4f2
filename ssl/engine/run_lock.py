"""One run per output folder: an advisory lock, ``<output_dir>/run.lock``, held while a run
trains (by the main process only in a multi-process run).

Two runs on one folder would interleave ``metrics.jsonl``, overwrite ``config.yaml`` and delete
each other's temporary checkpoint folder; the second one (a second ``--resume auto`` too) is
refused in one line naming the first one's pid and host, before it writes or moves anything.

The lock is a POSIX record lock (``fcntl.lockf``) on the file, which the kernel drops when its
process ends however it ends (a killed run never blocks the next one) and which NFS supports;
unlike ``flock`` it is not inherited by forked data-loader workers, so a worker outliving a
killed run does not keep the folder locked. The file holds ``{"pid", "host", ...}`` for the
refusal message; it is removed when the run ends, and so is the folder if the run made it and
wrote nothing into it (a run refused after taking the lock). On a file system without locks,
the pid in the file decides: a live process on this host (or any on another host) keeps the
folder, a dead one on this host is taken over with a warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

__all__ = [
    "LOCK_NAME",
    "RunLock",
    "RunLockedError",
    "hold_output_dir",
    "lock_output_dir",
    "release_output_dir",
]

#: The lock file inside the output folder.
LOCK_NAME = "run.lock"

logger = logging.getLogger("unimix.ssl")

_HELD: dict[str, RunLock] = {}  # locks this process holds (POSIX locks do not exclude oneself)


class RunLockedError(ValueError):
    """Another run holds the output folder; ``str(err)`` is one line naming it. ``report``:
    whether this process should print it (the main one; the others stop quietly)."""

    def __init__(self, message: str, report: bool = True) -> None:
        super().__init__(message)
        self.report = report


def _holder_text(info: dict | None) -> str:
    if not info:
        return "another run (it is starting: its pid is not written yet)"
    pid, host = info.get("pid", "?"), info.get("host", "?")
    since = f", started {info['started']}" if info.get("started") else ""
    return f"another run (pid {pid} on host {host}{since})"


def _read_info(fd: int) -> dict | None:
    try:
        data = os.pread(fd, 4096, 0)
        info = json.loads(data.decode()) if data.strip() else None
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _refusal(output_dir: Path, info: dict | None) -> RunLockedError:
    return RunLockedError(
        f"output_dir={os.fspath(output_dir)!r} is in use by {_holder_text(info)}: wait for it to "
        f"end or stop it, or choose another --output-dir (the lock is {output_dir / LOCK_NAME})"
    )


class RunLock:
    """A held lock; :meth:`release` (or the process ending) lets the folder go."""

    def __init__(self, path: Path, fd: int, made_dir: bool = False) -> None:
        self.path, self.fd = path, fd
        self.made_dir = made_dir  # the run made output_dir: released still empty, it goes

    def release(self) -> None:
        if self.fd < 0:
            return
        _HELD.pop(os.fspath(self.path.resolve()), None)
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                os.unlink(self.path)  # before unlocking: no one locks a file about to vanish
        except OSError:
            pass
        os.close(self.fd)  # drops the lock
        self.fd = -1
        if self.made_dir:  # a run refused before writing anything leaves no empty folder
            with contextlib.suppress(OSError):  # not empty: the run wrote into it
                self.path.parent.rmdir()


def _write_info(fd: int) -> None:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)


def _take_unlocked(output_dir: Path, fd: int) -> None:
    """No record locks on this file system: the pid in the file decides."""
    info = _read_info(fd)
    if info and info.get("pid") != os.getpid():
        same_host = info.get("host") == socket.gethostname()
        if not same_host or _pid_alive(info.get("pid")):
            os.close(fd)
            raise _refusal(output_dir, info)
        logger.warning(
            "%s: taking over the lock of pid %s (no longer running on this host)",
            output_dir / LOCK_NAME,
            info.get("pid"),
        )


def lock_output_dir(output_dir: str | os.PathLike) -> RunLock:
    """Lock ``output_dir`` (created if missing) for this run.

    Raises:
        RunLockedError: another run holds it (one line naming its pid and host).
    """
    output_dir = Path(output_dir)
    made_dir = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_NAME
    key = os.fspath(path.resolve())
    if key in _HELD:  # a second run in this very process (a thread, a notebook)
        raise _refusal(output_dir, _read_info(_HELD[key].fd))
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EAGAIN):
                info = _read_info(fd)
                os.close(fd)
                raise _refusal(output_dir, info) from None
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            _take_unlocked(output_dir, fd)
        try:  # the holder may have removed the file between our open and our lock: retry
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    _write_info(fd)
    lock = _HELD[key] = RunLock(path, fd, made_dir)
    return lock


def release_output_dir(output_dir: str | os.PathLike) -> None:
    """Release this process's lock of ``output_dir``, if it holds one."""
    key = os.fspath((Path(output_dir) / LOCK_NAME).resolve())
    lock = _HELD.get(key)
    if lock is not None:
        lock.release()


def hold_output_dir(output_dir: str | os.PathLike, accelerator: Accelerator) -> None:
    """Lock ``output_dir`` for this run: the main process takes the lock, and every process
    learns whether it got it (a collective with several).

    Raises:
        RunLockedError: on every process when another run holds it.
    """
    message = None
    if accelerator.is_main_process:
        try:
            lock_output_dir(output_dir)
        except RunLockedError as err:
            message = str(err)
    if accelerator.num_processes > 1:
        box = [message]
        broadcast_object_list(box, from_process=0)
        message = box[0]
    if message is not None:
        raise RunLockedError(message, report=accelerator.is_main_process)
