"""``unimix knn`` / ``linear`` / ``export`` on a chosen device and in several processes: a device
this machine lacks fails in one line (exit 2); 2 CPU processes (``accelerate launch``, gloo)
give exactly the predictions of one; the memory-mapped feature cache gives the same numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unimix.backbones import create_dino_backbone
from unimix.cli import main as unimix_main
from unimix.eval import export_extractor

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A poolformer_nano exported as safetensors (16 px): a model every command accepts."""
    torch.manual_seed(3)
    model = create_dino_backbone("poolformer_nano").eval()
    meta = {"backbone": "poolformer_nano", "image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
    return export_extractor(model, meta, tmp_path_factory.mktemp("model") / "ext", "safetensors")


def _knn_args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(model),
        "--data",
        "synthetic",
        "--limit-train",
        "90",
        "--limit-test",
        "25",
        "--k",
        "5",
        "20",
        "--no-progress",
        "--predictions",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["knn", "linear", "export"])
def test_missing_cuda_fails_in_one_line(
    command: str, extractor: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, str(extractor), "--device", "cuda"]
    argv += ["--output", str(tmp_path / "x")] if command == "export" else ["--data", "synthetic"]
    assert unimix_main(argv) == 2
    err = capsys.readouterr().err
    assert err == "error: --device cuda: no CUDA device is available on this machine\n"


def test_knn_on_cpu_with_workers_and_the_mmap_cache(
    extractor: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain.json"
    assert (
        unimix_main(["knn", *_knn_args(extractor, plain, "--device", "cpu", "--workers", "0")]) == 0
    )
    cached = tmp_path / "cached.json"
    argv = _knn_args(extractor, cached, "--workers", "1", "--features-cache", str(tmp_path / "c"))
    assert unimix_main(["knn", *argv]) == 0
    capsys.readouterr()
    a, b = json.loads(plain.read_text()), json.loads(cached.read_text())
    assert a["device"] == "cpu" and a["processes"] == 1 and b["workers"] == 1
    assert a["predictions"] == b["predictions"] and a["top1"] == b["top1"]
    assert len(list((tmp_path / "c").glob("store_*/features.f32"))) == 2


def _launch(*argv: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        str(accelerate),
        "launch",
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
        "29517",
        "-m",
        "unimix.cli",
        *argv,
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_predictions_of_one(extractor: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    assert unimix_main(["knn", *_knn_args(extractor, one, "--device", "cpu")]) == 0
    two = tmp_path / "two.json"
    _launch("knn", *_knn_args(extractor, two, "--device", "cpu", "--workers", "0"))
    cached = tmp_path / "two_cached.json"
    cache = ["--workers", "0", "--features-cache", str(tmp_path / "cache")]
    _launch("knn", *_knn_args(extractor, cached, "--device", "cpu", *cache))
    a, b, c = (json.loads(p.read_text()) for p in (one, two, cached))
    assert b["processes"] == 2 and c["processes"] == 2
    assert a["predictions"] == b["predictions"] == c["predictions"]
    assert a["top1"] == b["top1"] == c["top1"] and a["top5"] == b["top5"]
