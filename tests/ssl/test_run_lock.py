"""One run per output folder (issue 25, item 9): a second run, or a second ``--resume auto``,
on a folder a run is training in is refused in one line naming the first one's pid and host,
exit 2, and nothing of the first run is touched; a lock whose process is gone (killed, or a
stale file naming a dead pid) never blocks. Real concurrent runs, real processes holding and
losing the lock; every wait bounded."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_dino_train import PRETRAIN, REPO, _env, _metrics, _run, _write_config

from unimix.checkpoint import list_checkpoints, load_backbone, verify_checkpoint
from unimix.ssl.engine.run_lock import LOCK_NAME, RunLockedError, lock_output_dir

_HOLD = """
import sys, time
from unimix.ssl.engine.run_lock import lock_output_dir
lock_output_dir(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding the lock of ``folder`` (until killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(folder)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_held_folder_is_refused_naming_the_holder_until_it_is_killed(tmp_path: Path) -> None:
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunLockedError) as info:
            lock_output_dir(tmp_path)
        message = str(info.value)
        assert message.count("\n") == 0
        assert f"in use by another run (pid {holder.pid} on host {socket.gethostname()}" in message
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: no chance to release anything
        holder.wait(timeout=30)
    lock = lock_output_dir(tmp_path)  # the kernel dropped the dead process's lock
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] != holder.pid
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_stale_lock_file_of_a_dead_pid_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    stale = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": "long ago"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    lock = lock_output_dir(tmp_path)
    assert json.loads((tmp_path / LOCK_NAME).read_text())["started"] != "long ago"
    lock.release()


def test_a_second_run_in_the_same_process_is_refused(tmp_path: Path) -> None:
    lock = lock_output_dir(tmp_path)
    try:
        with pytest.raises(RunLockedError, match="in use by another run"):
            lock_output_dir(tmp_path / ".." / tmp_path.name)  # the same folder, spelled otherwise
    finally:
        lock.release()
    lock_output_dir(tmp_path).release()


@pytest.mark.slow
def test_two_runs_on_one_folder_the_second_is_refused_and_the_first_untouched(
    tmp_path: Path,
) -> None:
    config = _write_config(tmp_path, epochs=1000)  # still running when the others come
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, *PRETRAIN, "-c", str(config), "-o", str(out)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    others: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:
            if list_checkpoints(out / "checkpoints"):
                break
            time.sleep(0.01)
        assert first.poll() is None, "the first run ended too early"
        config_text = (out / "config.yaml").read_bytes()
        others = [  # a second run, and an accidental second resume
            subprocess.Popen(
                [sys.executable, *PRETRAIN, "-c", str(config), "-o", str(out), *extra],
                env=_env(),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for extra in ([], ["--resume", "auto"])
        ]
        for other in others:
            stderr = other.communicate(timeout=120)[1]
            assert other.returncode == 2, stderr[-2000:]
            assert stderr.count("\n") == 1 and "Traceback" not in stderr
            assert stderr.startswith(f"error: output_dir={str(out)!r} is in use by another run")
            assert f"(pid {first.pid} on host {socket.gethostname()}" in stderr
        assert first.poll() is None, "the first run did not survive the others"
        first.send_signal(signal.SIGTERM)  # end it early, cleanly
        first.communicate(timeout=120)
    finally:
        for proc in [first, *others]:
            if proc.poll() is None:
                proc.kill()
    assert first.returncode == 143
    assert (out / "config.yaml").read_bytes() == config_text
    steps = [r["step"] for r in _metrics(out) if "loss" in r]
    assert steps == list(range(1, steps[-1] + 1))  # one writer: no step twice, none missing
    for checkpoint in list_checkpoints(out / "checkpoints"):
        verify_checkpoint(checkpoint)
        load_backbone(checkpoint)
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert not (out / LOCK_NAME).exists()
    # the folder is free again: the interrupted run continues
    _run(
        [
            sys.executable,
            *PRETRAIN,
            "-c",
            str(config),
            "-o",
            str(out),
            "--resume",
            "auto",
            "max_steps=" + str(steps[-1] + 2),
        ]
    )
