"""The trainer's online and final k-NN run the evaluation's sharded code on every process: a
2-process run's numbers equal brute force over its own saved teacher (written here in numpy)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_dino_train import (
    PRETRAIN,
    _free_port,
    _metrics,
    _run,
    _write_config,
    saved_teacher_top1,
)


@pytest.mark.slow
def test_two_process_online_and_final_knn_equal_brute_force(tmp_path: Path) -> None:
    out = tmp_path / "two"
    config = _write_config(tmp_path, epochs=1, output_dir=str(out))
    extra = [
        "data.holdout=25",
        "eval.knn_at_end=true",
        "eval.k=5",
        "eval.knn_every_epochs=0.5",
        "checkpoint.every_steps=0",
    ]
    launch = [
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
        str(_free_port()),
    ]
    proc = _run([*launch, *PRETRAIN, "-c", str(config), *extra], timeout=300)
    assert "world size 2" in proc.stdout + proc.stderr
    online = [m["knn_top1"] for m in _metrics(out) if "knn_top1" in m]
    assert online, "no online k-NN was logged"
    knn = json.loads((out / "knn.json").read_text())
    # an odd number of queries (25) and bank (71): the two processes' blocks differ in size
    assert knn["trained"] == pytest.approx(saved_teacher_top1(out, held=25))
