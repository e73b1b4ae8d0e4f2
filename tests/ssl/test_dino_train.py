"""End-to-end DINO runs on a tiny ViT: 2 processes vs 1, exact resume after SIGKILL, damaged and
mismatched checkpoints, config errors. Each run is a few seconds (mostly interpreter start-up)."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from unimix.checkpoint import find_resume_checkpoint, list_checkpoints
from unimix.ssl.pretrain_cli import main

REPO = Path(__file__).resolve().parents[2]
#: ``unimix pretrain`` as the README runs it: ``python -m unimix.cli pretrain`` (or after
#: ``accelerate launch``, which takes the same ``-m``).
PRETRAIN = ["-m", "unimix.cli", "pretrain"]

# A 1-block ViT (LayerNorm: no batch statistics, so any process count computes the same step)
# with drop-path on, so an exact resume also needs the restored RNG state.
TINY = {
    "data": {
        "dataset": "synthetic",
        "num_samples": 96,
        "image_size": 16,
        "batch_size": 16,
        "num_workers": 0,
    },
    "augment": {"global_size": 16, "local_size": 8, "num_local": 2},
    "model": {
        "backbone": "vit_tiny_patch16_224",
        "backbone_kwargs": {
            "img_size": 16,
            "patch_size": 4,
            "embed_dim": 16,
            "depth": 1,
            "num_heads": 2,
            "mlp_ratio": 2,
            "dynamic_img_size": True,
            "drop_path_rate": 0.1,
        },
        "head": {"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16},
    },
    "optim": {"warmup_epochs": 1, "base_lr": 0.005},
    "dino": {
        "freeze_last_layer_epochs": 0.5,
        "warmup_teacher_temp": 0.02,
        "warmup_teacher_temp_epochs": 1,
    },
    "epochs": 6,
    "threads": 1,
    "checkpoint": {"every_steps": 4, "keep_last": 3},
    "logging": {"every_steps": 1, "progress_bar": False},
}


def _write_config(tmp_path: Path, **top: object) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg.update(top)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path: Path) -> None:
    config = _write_config(tmp_path, max_steps=5)
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, *PRETRAIN, "-c", str(config), "-o", str(one)])
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
    proc = _run([*launch, *PRETRAIN, "-c", str(config), "-o", str(two)], timeout=180)
    assert "world size 2" in proc.stdout + proc.stderr
    m1, m2 = _metrics(one), _metrics(two)
    assert m1[0]["event"] == "start" and m1[0]["world_size"] == 1
    assert m2[0]["event"] == "start" and m2[0]["world_size"] == 2
    loss1 = [r["loss"] for r in m1 if "loss" in r]
    loss2 = [r["loss"] for r in m2 if "loss" in r]
    assert len(loss1) == len(loss2) == 5
    assert loss1 == pytest.approx(loss2, abs=1e-4)
    assert all(r["world_size"] == 2 for r in m2 if "loss" in r)


def _assert_same_training(ref: Path, resumed: Path) -> list[float]:
    """The resumed run ``resumed`` ended bit-identical to the uninterrupted ``ref``: every
    final weight file equal tensor for tensor and the same loss at every step; returns them."""
    a, b = _final_weights(ref), _final_weights(resumed)
    for file in a:
        assert a[file].keys() == b[file].keys()
        for key in a[file]:
            assert torch.equal(a[file][key], b[file][key]), f"{file}:{key} differs after resume"
    losses_ref = [r["loss"] for r in _metrics(ref) if "loss" in r]
    losses_resumed = [r["loss"] for r in _metrics(resumed) if "loss" in r]
    assert losses_ref == losses_resumed
    return losses_ref


def _final_weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    last = list_checkpoints(out / "checkpoints")[-1]
    files = ("student.safetensors", "teacher.safetensors", "dino_state.safetensors")
    return {f: load_file(str(last / f)) for f in files}


@pytest.mark.slow
def test_sigkill_then_resume_auto_is_bit_identical(tmp_path: Path) -> None:
    config = _write_config(tmp_path, epochs=40)  # 240 steps: long enough to be killed mid-run
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    _run([sys.executable, *PRETRAIN, "-c", str(config), "-o", str(ref)])

    proc = subprocess.Popen(
        [sys.executable, *PRETRAIN, "-c", str(config), "-o", str(killed)],
        env=_env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        steps = [int(p.name.split("_")[1]) for p in list_checkpoints(killed / "checkpoints")]
        if steps and max(steps) >= 8:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = [int(p.name.split("_")[1]) for p in list_checkpoints(killed / "checkpoints")]
    assert saved and 8 <= max(saved) < 240  # killed mid-run; 6 steps/epoch, so mid-epoch too

    resumed = _run(
        [sys.executable, *PRETRAIN, "-c", str(config), "-o", str(killed), "--resume", "auto"]
    )
    assert "resumed from" in resumed.stdout + resumed.stderr
    _assert_same_training(ref, killed)


@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back_and_mismatched_keys_are_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _write_config(tmp_path, max_steps=12)
    out = tmp_path / "run"
    _run([sys.executable, *PRETRAIN, "-c", str(config), "-o", str(out)])
    checkpoints = list_checkpoints(out / "checkpoints")
    assert [p.name for p in checkpoints] == ["step_00000004", "step_00000008", "step_00000012"]
    teacher_file = checkpoints[-1] / "teacher.safetensors"
    data = bytearray(teacher_file.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the weights
    teacher_file.write_bytes(bytes(data))

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("unimix.checkpoint").addHandler(handler)
    try:
        assert find_resume_checkpoint(out) == checkpoints[-2]
    finally:
        logging.getLogger("unimix.checkpoint").removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert any("step_00000012" in m and "checksum" in m for m in messages), messages

    # A checkpoint from another head size: the error lists the keys that differ.
    capsys.readouterr()  # what the lookup above logged is not this command's output
    code = main(
        [
            "-c",
            str(config),
            "-o",
            str(out),
            "--resume",
            str(checkpoints[-2]),
            "model.head.num_layers=2",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "student keys do not match" in err
    assert "unexpected" in err and "head.mlp.4.weight" in err


def test_config_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for override, key in [
        ("optim.base_lr=-1", "optim.base_lr"),
        ("optim.lrr=1", "optim.lrr"),
        ("data.batch_size=abc", "data.batch_size"),
        ("augment.global_scale=[0.9,0.1]", "augment.global_scale"),
    ]:
        assert main(["-c", "quickstart", override]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and key in err, err
    assert main(["-c", "no_such_recipe"]) == 2
    assert "no_such_recipe" in capsys.readouterr().err


def test_max_minutes_stops_early_with_a_checkpoint(tmp_path: Path) -> None:
    # A budget that is spent after the first step: the run stops there and still saves it.
    out = tmp_path / "run"
    config = _write_config(tmp_path, max_minutes=1e-6, output_dir=str(out))
    proc = _run([sys.executable, *PRETRAIN, "-c", str(config)])
    assert "max_minutes" in proc.stderr + proc.stdout
    steps = [m["step"] for m in _metrics(out) if "loss" in m]
    assert steps == [1], steps
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000001"]


def test_channels_last_changes_speed_not_results(tmp_path: Path) -> None:
    # A conv/pooling backbone (where channels-last is the default and matters), stopped at a
    # checkpoint and resumed: the losses equal a plain contiguous-format run's to float rounding,
    # and the resumed run equals the uninterrupted one exactly.
    config = _write_config(tmp_path, epochs=2)

    def losses(name: str, *overrides: str, resume: bool = False) -> list[float]:
        out = tmp_path / name
        args = ["-c", str(config), "-o", str(out), "model.backbone=poolformer_nano"]
        args += ["model.backbone_kwargs={}", *overrides] + (["--resume", "auto"] if resume else [])
        assert main(args) == 0
        return [r["loss"] for r in _metrics(out) if "loss" in r]

    plain = losses("plain", "model.channels_last=false")
    fast = losses("fast")
    assert len(plain) == len(fast) == 12
    assert fast == pytest.approx(plain, abs=1e-4)
    losses("resumed", "max_steps=5")
    resumed = losses("resumed", resume=True)
    assert resumed == fast
    a, b = _final_weights(tmp_path / "fast"), _final_weights(tmp_path / "resumed")
    assert all(torch.equal(a[f][k], b[f][k]) for f in a for k in a[f])


def test_validation_knn_on_held_out_images_like_for_like(tmp_path: Path) -> None:
    # data.holdout: pretraining never sees the held-out images; the final k-NN uses them as
    # queries (bank = the other training images) for teacher, student, untrained and pixels.
    out = tmp_path / "run"
    config = _write_config(tmp_path, epochs=1, output_dir=str(out))
    extra = ["data.holdout=24", "eval.knn_at_end=true", "eval.k=5", "checkpoint.every_steps=0"]
    proc = _run([sys.executable, *PRETRAIN, "-c", str(config), *extra])
    start = _metrics(out)[0]
    assert start["event"] == "start"
    logged = [m for m in _metrics(out) if "loss" in m]
    assert len(logged) == (96 - 24) // 16  # steps per epoch over the 72 kept images
    for m in logged:
        gap = m["teacher_mean_entropy"] - m["teacher_entropy"]
        assert m["teacher_entropy_gap"] == pytest.approx(gap)

    knn = json.loads((out / "knn.json").read_text())
    assert "24 held-out images (bank: the other 72)" in knn["dataset"]
    assert [r["network"] for r in knn["rows"]] == ["raw_pixels", "teacher", "student", "untrained"]
    assert "trained teacher" in proc.stdout and "raw pixels" in proc.stdout

    # the teacher's number by brute force over the held-out split, from its saved weights
    assert knn["trained"] == pytest.approx(saved_teacher_top1(out, held=24))


def saved_teacher_top1(out: Path, held: int, k: int = 5, t: float = 0.07) -> float:
    """k-NN top-1 of a run's saved teacher by numpy brute force: the 96-image synthetic training
    set at 16 px, ``held`` images held out as queries, the rest as the bank."""
    from test_eval_compare import brute_force_top1

    from unimix.data import build_dataset, holdout_indices
    from unimix.eval import eval_transform, load_backbone

    data = build_dataset(
        "synthetic", "train", num_samples=96, image_size=16, transform=eval_transform(16, *_norm())
    )
    kept, queries = holdout_indices(96, held)
    model, _ = load_backbone(out)
    with torch.no_grad():
        feats = torch.stack([model(data[i][0][None])[0] for i in range(96)]).double().numpy()
    labels = torch.tensor(data.targets).numpy()
    return brute_force_top1(feats[kept], labels[kept], feats[queries], labels[queries], k, t)


def _norm() -> tuple[tuple[float, ...], tuple[float, ...]]:
    from unimix.ssl.config import DataConfig

    return DataConfig().mean, DataConfig().std
