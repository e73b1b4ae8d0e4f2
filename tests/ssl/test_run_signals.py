"""SIGTERM and SIGINT during pretraining (issue 25, item 10): the step in progress is finished
and checkpointed, one line gives the ``--resume auto`` command, the exit code is 128 + N, and
that command ends bit-identical to an uninterrupted run. Real runs in real processes, real
signals (one process, a Ctrl-C to the whole process group with data-loader workers, and one
rank of two); every wait is bounded. Also: options and overrides in any order (item 19)."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_dino_train import (
    PRETRAIN,
    REPO,
    _assert_same_training,
    _env,
    _free_port,
    _metrics,
    _run,
    _write_config,
)

from unimix.checkpoint import list_checkpoints, load_backbone, verify_checkpoint
from unimix.ssl.pretrain_cli import main, resume_command

LINE = re.compile(
    r"stopped by (SIG\w+) after step (\d+) of (\d+): checkpoint (\S+) written; "
    r"continue with: (.+)"
)


def _logged_steps(out: Path) -> int:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    steps = [json.loads(line).get("step", 0) for line in lines if line.endswith("}")]
    return max(steps, default=0)


def _wait_for_step(proc: subprocess.Popen, out: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and _logged_steps(out) < step:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be signalled"
    assert _logged_steps(out) >= step, "the run did not reach the step in time"


def _stop_line(stderr: str, launcher: bool = False) -> re.Match[str]:
    """The one ``stopped by`` line; no traceback (``launcher``: but the launcher's own report
    of its children's non-zero exit, which is not ours to print)."""
    ours = stderr.split("ChildFailedError")[0].rsplit("Traceback", 1)[0] if launcher else stderr
    assert "Traceback" not in ours and "exited unexpectedly" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("stopped by")]
    assert len(lines) == 1, stderr[-3000:]
    match = LINE.fullmatch(lines[0])
    assert match, lines[0]
    return match


def _check_saved(out: Path, step: int, match: re.Match[str]) -> None:
    """The line names the checkpoint of the step it stopped after; it and every earlier one
    verify and load; the lock is gone."""
    root = out / "checkpoints"
    assert Path(match[4]) == root / f"step_{step:08d}"
    saved = list_checkpoints(root)
    assert saved[-1] == root / f"step_{step:08d}"
    for checkpoint in saved:
        verify_checkpoint(checkpoint)
        load_backbone(checkpoint)
    stopped = [r for r in _metrics(out) if r.get("event") == "interrupted"]
    assert stopped == [{"event": "interrupted", "signal": match[1], "step": step}]
    assert max(r["step"] for r in _metrics(out) if "loss" in r) == step
    assert not (out / "run.lock").exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c-with-workers"])
def test_a_signal_checkpoints_the_step_and_resume_auto_is_bit_identical(
    tmp_path: Path, how: str
) -> None:
    workers = 2 if how == "ctrl-c-with-workers" else 0
    base = _write_config(tmp_path, epochs=10)  # 60 steps of 16, a checkpoint every 4
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    overrides = [f"data.num_workers={workers}"]
    _run([sys.executable, *PRETRAIN, "-c", str(base), "-o", str(ref), *overrides])

    args = ["-c", str(base), *overrides, "-o", str(cut)]
    proc = subprocess.Popen(
        [sys.executable, *PRETRAIN, *args],
        env=_env(),
        cwd=REPO,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        _wait_for_step(proc, cut, 10)
        if how == "sigterm":  # what SLURM sends the job's processes before its time limit
            proc.send_signal(signal.SIGTERM)
        else:  # a terminal's Ctrl-C reaches the whole foreground group, loader workers too
            assert len(psutil.Process(proc.pid).children()) == workers
            os.killpg(proc.pid, signal.SIGINT)
        stderr = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
    signame = "SIGTERM" if how == "sigterm" else "SIGINT"
    assert proc.returncode == 128 + signal.Signals[signame].value, stderr[-3000:]
    match = _stop_line(stderr)
    step = int(match[2])
    assert match[1] == signame and match[3] == "60" and 10 <= step < 60
    _check_saved(cut, step, match)

    command = shlex.split(match[5])  # exactly what the user is told to run
    assert command == ["unimix", "pretrain", *args, "--resume", "auto"]
    resumed = _run([sys.executable, "-m", "unimix.cli", *command[1:]])
    assert f"resumed from {cut / 'checkpoints' / f'step_{step:08d}'}" in resumed.stderr + (
        resumed.stdout
    )
    assert len(_assert_same_training(ref, cut)) == 60


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
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "unimix.cli" in child.cmdline():
                return child
        except psutil.Error:
            continue
    raise AssertionError(f"no process of rank {rank} under the launcher")


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_both_at_the_same_step_and_the_lock_is_rank_0s(
    tmp_path: Path,
) -> None:
    config = _write_config(tmp_path, epochs=10)
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    _run([*_launch(_free_port()), "-c", str(config), "-o", str(ref)], timeout=300)
    launcher = subprocess.Popen(
        [*_launch(_free_port()), "-c", str(config), "-o", str(cut)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_step(launcher, cut, 8, timeout=240)
        rank0, rank1 = _rank_process(launcher, 0), _rank_process(launcher, 1)
        # only the main process holds the output folder (test_run_lock: a second run refused)
        lock = json.loads((cut / "run.lock").read_text())
        assert lock["pid"] == rank0.pid and lock["pid"] != rank1.pid
        rank1.send_signal(signal.SIGTERM)  # one rank only: both must stop after the same step
        stderr = launcher.communicate(timeout=120)[1]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    # the launcher's report lists the ranks that had exited when it looked, then stops the
    # rest: the one signalled, maybe both; every one listed exited with SIGTERM's 143, not 1
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", stderr)
    assert codes and set(codes) == {"143"}, stderr[-3000:]
    match = _stop_line(stderr, launcher=True)
    step = int(match[2])
    assert match[1] == "SIGTERM" and 8 <= step < 60
    _check_saved(cut, step, match)
    names = {p.name for p in (cut / "checkpoints" / f"step_{step:08d}").iterdir()}
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= names  # both ranks saved it
    assert "with -m unimix.cli pretrain" in match[5]

    _run(
        [*_launch(_free_port()), "-c", str(config), "-o", str(cut), "--resume", "auto"], timeout=300
    )
    assert len(_assert_same_training(ref, cut)) == 60


def test_options_and_overrides_come_in_any_order(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    out = tmp_path / "run"
    # item 19: an override after the options (argparse's plain parse_args refused it)
    assert main(["-c", str(config), "-o", str(out), "--resume", "auto", "max_steps=2"]) == 0
    assert main(["max_steps=3", "-c", str(config), "--resume", "auto", "-o", str(out)]) == 0
    assert [r["step"] for r in _metrics(out) if "loss" in r] == [1, 2, 3]


def test_the_resume_command_keeps_every_argument_and_quotes_them() -> None:
    argv = ["-c", "my run.yaml", "--resume", "runs/x/checkpoints/step_4", "optim.base_lr=1e-3"]
    assert resume_command(argv) == (
        "unimix pretrain -c 'my run.yaml' optim.base_lr=1e-3 --resume auto"
    )
    assert resume_command(["--resume=auto", "-o", "o"]) == "unimix pretrain -o o --resume auto"
    assert resume_command(["-o", "o"], world_size=2).startswith("the same launcher")
