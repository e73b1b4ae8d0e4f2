"""Exports and k-NN outputs where writing fails or a cache is damaged (issue 25 items 16 and
20): an export to a read-only file system (every format, ``--format hf`` too), ``unimix knn
--out`` somewhere it cannot write (refused before any feature is computed), a feature cache or
store cut short (a cache miss with a warning, computed again, never a failure on every later
run), and the mode of every safetensors file written. The real commands in real processes, a
real read-only tmpfs where mounting is allowed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_dino_train import REPO, TINY, _env

from unimix.checkpoint import list_checkpoints, load_backbone, verify_checkpoint
from unimix.ssl.pretrain_cli import main as pretrain_main

KNN_DATA = [
    "--data",
    "synthetic",
    "--limit-train",
    "48",
    "--limit-test",
    "24",
    "--k",
    "5",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--no-progress",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 4-step run of the tiny ViT (one checkpoint)."""
    tmp = tmp_path_factory.mktemp("run")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "eval": {"knn_at_end": False}}))
    assert pretrain_main(["-c", str(config), "-o", str(tmp / "run"), "max_steps=4"]) == 0
    return tmp / "run"


def _unimix(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``unimix ARGS`` in a process of its own, under the common umask 022."""
    return subprocess.run(
        [sys.executable, "-m", "unimix.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
        cwd=REPO,
        preexec_fn=lambda: os.umask(0o022),
    )


def _one_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _still_loads(run: Path) -> None:
    for checkpoint in list_checkpoints(run / "checkpoints"):
        verify_checkpoint(checkpoint)
        load_backbone(checkpoint)


@pytest.fixture
def read_only(tmpfs: Callable[[str], Path]) -> Path:
    """A real read-only file system; the test is skipped where mounting is not allowed."""
    return tmpfs("1m,ro")


@pytest.mark.parametrize(
    ("fmt", "name"),
    [("safetensors", "x.safetensors"), ("onnx", "x.onnx"), ("hf", "hf/")],
)
def test_an_export_to_a_read_only_file_system_is_one_line(
    run_dir: Path, read_only: Path, fmt: str, name: str
) -> None:
    proc = _unimix(
        "export", str(run_dir), "--format", fmt, "-o", str(read_only / name), "--device", "cpu"
    )
    target = str(read_only / name).rstrip("/")
    assert _one_error(proc) == f"error: cannot write {target}: Read-only file system"
    _still_loads(run_dir)


def test_an_export_under_a_file_is_one_line(run_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    for fmt, name in (("torchscript", "x.pt"), ("hf", "hf/")):
        proc = _unimix(
            "export", str(run_dir), "--format", fmt, "-o", str(blocker / name), "--device", "cpu"
        )
        assert _one_error(proc).startswith(f"error: cannot write {blocker / name.rstrip('/')}")


def test_knn_out_that_cannot_be_written_is_refused_before_any_feature(
    run_dir: Path, tmp_path: Path, read_only: Path
) -> None:
    cache = tmp_path / "cache"
    proc = _unimix(
        "knn",
        str(run_dir),
        *KNN_DATA,
        "--cache-dir",
        str(cache),
        "--out",
        str(read_only / "knn.json"),
    )
    assert _one_error(proc) == (
        f"error: --out {read_only / 'knn.json'}: cannot be written (read-only file system at "
        f"{read_only})"
    )
    assert not cache.exists()  # refused before the first feature was extracted


def _knn_top1(proc: subprocess.CompletedProcess, out: Path) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())["top1"]


def test_a_cut_feature_cache_file_is_a_miss_computed_again(run_dir: Path, tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "knn.json"
    args = ["knn", str(run_dir), *KNN_DATA, "--cache-dir", str(cache), "--out", str(out)]
    first = _knn_top1(_unimix(*args), out)
    files = sorted(cache.glob("features_*.safetensors"))
    assert len(files) == 2  # bank and queries
    json_mode = stat.S_IMODE(out.stat().st_mode)
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {json_mode}  # not safetensors' 0600
    files[0].write_bytes(files[0].read_bytes()[:-10])  # cut short
    proc = _unimix(*args)
    assert _knn_top1(proc, out) == first
    warnings = [line for line in proc.stderr.splitlines() if "feature cache" in line]
    assert warnings == [
        f"warning: feature cache {files[0]} is unreadable (Error while deserializing header: "
        "incomplete metadata, file not fully covered): computing it again"
    ]
    again = _unimix(*args)  # rewritten whole: the next run reads it silently
    assert _knn_top1(again, out) == first and "feature cache" not in again.stderr


def test_a_cut_feature_store_is_a_miss_computed_again(run_dir: Path, tmp_path: Path) -> None:
    store, out = tmp_path / "store", tmp_path / "knn.json"
    args = ["knn", str(run_dir), *KNN_DATA, "--features-cache", str(store), "--out", str(out)]
    first = _knn_top1(_unimix(*args), out)
    features = sorted(store.glob("store_*/features.f32"))
    assert len(features) == 2
    features[0].write_bytes(features[0].read_bytes()[:-12])
    proc = _unimix(*args)
    assert _knn_top1(proc, out) == first
    lines = [line for line in proc.stderr.splitlines() if "feature store" in line]
    assert len(lines) == 1 and lines[0].startswith(f"warning: feature store {features[0].parent}")
    assert "is damaged (features.f32:" in lines[0]


def test_exported_safetensors_get_the_mode_of_the_json_beside_them(
    run_dir: Path, tmp_path: Path
) -> None:
    for fmt, name, beside in (
        ("safetensors", "x.safetensors", "x.safetensors.json"),
        ("hf", "hf/", "hf/config.json"),
    ):
        proc = _unimix(
            "export", str(run_dir), "--format", fmt, "-o", str(tmp_path / name), "--device", "cpu"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        weights = tmp_path / name / "model.safetensors" if fmt == "hf" else tmp_path / name
        mode = stat.S_IMODE((tmp_path / beside).stat().st_mode)
        assert stat.S_IMODE(weights.stat().st_mode) == mode == 0o644
