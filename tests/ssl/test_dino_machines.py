"""Two machines on one host: two ``accelerate launch --num_machines 2 --machine_rank 0|1`` over
gloo train as one world of 2 — the same losses as one process, checkpoints written once into
the shared output dir, and both resume from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_dino_train import PRETRAIN, _env, _free_port, _metrics, _run, _write_config

from unimix.checkpoint import list_checkpoints, verify_checkpoint
from unimix.ssl.engine.launch import check_launch

REPO = Path(__file__).resolve().parents[2]


def _machines(args: list[str], port: int, multi_gpu: bool = True) -> list[str]:
    """Run ``unimix pretrain args`` as machine 0 and machine 1 at once; their outputs."""
    procs = []
    for rank in (0, 1):
        launch = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            *(["--multi_gpu"] * multi_gpu),
            "--num_machines",
            "2",
            "--machine_rank",
            str(rank),
            "--num_processes",
            "2",
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            str(port),
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            *PRETRAIN,
            *args,
        ]
        procs.append(
            subprocess.Popen(
                launch,
                env=_env(),
                cwd=REPO,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"machine {rank}:\n{out[-3000:]}"
    return outputs


@pytest.mark.slow
def test_two_machines_on_one_host_match_one_process_and_resume(tmp_path: Path) -> None:
    config = _write_config(tmp_path, max_steps=5)
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, *PRETRAIN, "-c", str(config), "-o", str(one)])

    # Machines 0 and 1 stop at step 3 (checkpoints at 3; every_steps=4 is not reached) ...
    out0, out1 = _machines(["-c", str(config), "-o", str(two), "max_steps=3"], _free_port())
    assert "world size 2 (MULTI_CPU, 2 machine(s) × 1 process(es), from accelerate launch)" in out0
    assert "unimix pretrain:" not in out1  # only the main process logs
    first = list_checkpoints(two / "checkpoints")
    assert [p.name for p in first] == ["step_00000003"]
    # ... then both resume from the shared output dir.
    out0, _ = _machines(["-c", str(config), "-o", str(two), "--resume", "auto"], _free_port())
    assert "resumed from" in out0

    m1, m2 = _metrics(one), _metrics(two)
    assert all(r["world_size"] == 2 for r in m2 if "loss" in r)
    loss1 = [r["loss"] for r in m1 if "loss" in r]
    loss2 = [r["loss"] for r in m2 if "loss" in r]
    assert len(loss1) == len(loss2) == 5
    assert loss1 == pytest.approx(loss2, abs=1e-4)

    # Written once, by the main process: no temporary directory left, every file hashed in the
    # manifest, the model files once and one RNG state per process.
    names = [p.name for p in (two / "checkpoints").iterdir()]
    assert sorted(names) == ["step_00000003", "step_00000004", "step_00000005"]
    last = two / "checkpoints" / "step_00000005"
    state = verify_checkpoint(last)
    assert state["world_size"] == 2 and state["step"] == 5
    files = sorted(p.name for p in last.iterdir() if p.name != "trainer_state.json")
    assert sorted(json.loads((last / "trainer_state.json").read_text())["files"]) == files
    assert [f for f in files if f.startswith("random_states")] == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]


def test_machines_without_multi_gpu_are_refused_in_one_line() -> None:
    # accelerate launch --num_machines 2 without --multi_gpu starts each machine alone.
    env = {"ACCELERATE_MIXED_PRECISION": "no", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(ValueError, match="add --multi_gpu"):
        check_launch(env)
    check_launch({**env, "WORLD_SIZE": "2"})
    check_launch({"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1"})  # not accelerate launch


@pytest.mark.slow
def test_machines_without_multi_gpu_exit_2(tmp_path: Path) -> None:
    config = _write_config(tmp_path, max_steps=1)
    with pytest.raises(AssertionError, match=r"(?s)add --multi_gpu.*exit status 2"):
        _machines(["-c", str(config), "-o", str(tmp_path / "run")], _free_port(), False)
    assert not (tmp_path / "run" / "checkpoints").exists()
