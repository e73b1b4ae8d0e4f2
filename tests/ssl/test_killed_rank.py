"""Several processes (issue 18): one of two ``accelerate launch`` ranks killed with SIGKILL mid-run
ends the other within a timeout, ``--resume auto`` then ends bit-identical to an uninterrupted
2-process run; a launch that asked for 2 processes but would run a world of 1 is refused."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from test_dino_train import (
    PRETRAIN,
    REPO,
    _assert_same_training,
    _env,
    _free_port,
    _run,
    _write_config,
)

from unimix.checkpoint import list_checkpoints
from unimix.ssl.engine.launch import check_launch, lost_peer_message

#: The survivor must be gone this long after its peer was killed (it takes ~3 s here).
END_WITHIN_S = 60


def _launch(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(port),
        *PRETRAIN,
    ]


def _rank_process(launcher: subprocess.Popen, rank: int) -> psutil.Process:
    """The training process of ``rank`` among the launcher's descendants (by its RANK)."""
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "unimix.cli" in child.cmdline():
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no process of rank {rank} under the launcher")


def _newest_step(out: Path) -> int:
    steps = [int(p.name.split("_")[1]) for p in list_checkpoints(out / "checkpoints")]
    return max(steps, default=0)


@pytest.mark.slow
def test_killed_rank_ends_the_other_and_resume_is_bit_identical(tmp_path: Path) -> None:
    # 60 steps (6 per epoch), a checkpoint every 2: killed mid-run, mid-epoch.
    config = _write_config(tmp_path, epochs=10, checkpoint={"every_steps": 2, "keep_last": 2})
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _run([*_launch(_free_port()), "-c", str(config), "-o", str(ref)], timeout=300)

    launcher = subprocess.Popen(
        [*_launch(_free_port()), "-c", str(config), "-o", str(killed)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and launcher.poll() is None and _newest_step(killed) < 4:
        time.sleep(0.005)
    assert launcher.poll() is None, "the run ended before it could be killed"
    _rank_process(launcher, 1).send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        output = launcher.communicate(timeout=END_WITHIN_S)[0]
    except subprocess.TimeoutExpired:
        launcher.kill()
        pytest.fail(f"rank 0 still running {END_WITHIN_S} s after rank 1 was killed")
    assert launcher.returncode != 0
    assert time.monotonic() - killed_at < END_WITHIN_S
    # the launcher names the rank that died; no process is left behind
    assert "rank      : 1" in output and "SIGKILL" in output, output[-3000:]
    assert 4 <= _newest_step(killed) < 60

    resumed = _run(
        [*_launch(_free_port()), "-c", str(config), "-o", str(killed), "--resume", "auto"],
        timeout=300,
    )
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert len(_assert_same_training(ref, killed)) == 60


def test_lost_peer_is_named_only_in_a_multi_process_run(monkeypatch: pytest.MonkeyPatch) -> None:
    # What gloo raised in rank 0 when rank 1 was killed (copied from a run).
    gloo = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
        "[127.0.0.1]:11393: Connection reset by peer. This is typically caused by a remote "
        "worker hanging or bugs in the application."
    )
    assert lost_peer_message(gloo) is None  # one process: the error is what it is
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    message = lost_peer_message(gloo)
    assert message is not None and message.count("\n") == 0
    assert message.startswith("process 0 of 2 lost contact with another process")
    assert "(Read error [127.0.0.1]:11393: Connection reset by peer)" in message
    assert message.endswith("--resume auto")
    assert lost_peer_message(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None


def test_cpu_launch_of_several_processes_is_refused_in_one_line() -> None:
    # What `accelerate launch --cpu --num_processes 2` hands its one process (read from it).
    env = {
        "ACCELERATE_USE_CPU": "True",
        "ACCELERATE_MIXED_PRECISION": "no",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }
    with pytest.raises(ValueError, match=r"world of 1 process .*replace --cpu with --multi_gpu"):
        check_launch(env)
    check_launch({"ACCELERATE_USE_CPU": "True", "ACCELERATE_MIXED_PRECISION": "no"})  # one asked


@pytest.mark.slow
def test_accelerate_launch_cpu_two_processes_exits_2(tmp_path: Path) -> None:
    config = _write_config(tmp_path, max_steps=1)
    out = tmp_path / "run"
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        *PRETRAIN,
        "-c",
        str(config),
        "-o",
        str(out),
    ]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=180, env=_env(), cwd=REPO)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "replace --cpu with --multi_gpu" in errors[0], proc.stderr
    assert "returned non-zero exit status 2" in proc.stderr  # the launcher's report of our exit
    assert "unimix pretrain:" not in proc.stdout + proc.stderr  # no training started
    assert not out.exists()
