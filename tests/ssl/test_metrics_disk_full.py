"""A full disk while ``metrics.jsonl`` is written (issue 25, item 13): one ``error:`` line naming
the file and the last good checkpoint, no traceback (none chained from closing the file), no
half line left in the file, every earlier checkpoint still loads and ``--resume auto``
continues once there is room. Once with the write failing half-way (an injected ENOSPC after
a short write, as a nearly full disk does), once on a real full file system (a tmpfs, skipped
where mounting is not allowed)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_dino_train import PRETRAIN, REPO, TINY, _env

from unimix.checkpoint import list_checkpoints, load_backbone, verify_checkpoint
from unimix.ssl.pretrain_cli import main


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "eval": {"knn_at_end": False}}))
    return config


def _whole_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]  # each line parses: none cut


def _all_load(root: Path) -> list[str]:
    names = []
    for checkpoint in list_checkpoints(root):
        verify_checkpoint(checkpoint)
        load_backbone(checkpoint)
        names.append(checkpoint.name)
    return names


def test_a_write_cut_short_by_a_full_disk_leaves_whole_lines_and_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = _config(tmp_path), tmp_path / "run"
    real_write = os.write
    records = {"n": 0}

    def nearly_full(fd: int, data: bytes) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            return real_write(fd, data)
        records["n"] += 1
        if records["n"] < 7:
            return real_write(fd, data)
        if records["n"] == 7:  # the disk takes half of this record, then nothing more
            return real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", nearly_full)
    code = main(["-c", str(config), "-o", str(out), "max_steps=12"])
    printed, err = capsys.readouterr()
    monkeypatch.undo()
    assert code == 2
    assert "Traceback" not in err and "During handling" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        f"error: no space left on device while writing {out / 'metrics.jsonl'}; the last good "
        f"checkpoint is {out / 'checkpoints' / 'step_00000004'}"
    ]
    records_kept = _whole_lines(out / "metrics.jsonl")  # record 7 was cut: it is gone whole
    assert [r["step"] for r in records_kept if "loss" in r] == [1, 2, 3, 4, 5]
    assert _all_load(out / "checkpoints") == ["step_00000004"]
    assert not (out / "run.lock").exists()

    assert main(["-c", str(config), "-o", str(out), "max_steps=12", "--resume", "auto"]) == 0
    assert [r["step"] for r in _whole_lines(out / "metrics.jsonl") if "loss" in r] == list(
        range(1, 13)
    )


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    """A real 48 MB file system; the test is skipped where mounting is not allowed."""
    return tmpfs("48m")


def _fill(disk: Path) -> None:
    """Take every free block of ``disk``."""
    with open(disk / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as err:
                assert err.errno == errno.ENOSPC


@pytest.mark.slow
def test_a_really_full_disk_under_a_running_run(tmp_path: Path, small_disk: Path) -> None:
    config, out = _config(tmp_path), small_disk / "run"
    run = [sys.executable, *PRETRAIN, "-c", str(config), "-o", str(out)]
    first = subprocess.run(
        [*run, "max_steps=4"], capture_output=True, text=True, timeout=120, env=_env(), cwd=REPO
    )
    assert first.returncode == 0, first.stderr
    # resumed with no checkpoint before its end: the metrics file is the first thing to fail
    proc = subprocess.Popen(
        [*run, "--resume", "auto", "max_steps=2000", "checkpoint.every_steps=0"],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len((out / "metrics.jsonl").read_text().splitlines()) >= 8:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before the disk was filled"
        _fill(small_disk)
        err = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: no space left on device while writing {out / 'metrics.jsonl'}; the last good "
        f"checkpoint is {out / 'checkpoints' / 'step_00000004'}"
    ]
    steps = [r["step"] for r in _whole_lines(out / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] > 4
    assert _all_load(out / "checkpoints") == ["step_00000004"]
