"""Helpers for tests that check a refused command loses nothing: a tiny finished pretraining run,
a byte-level snapshot of a folder, and a check that every checkpoint of a run still loads."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
from functools import partial
from pathlib import Path

import yaml

from unimix.checkpoint import list_checkpoints, load_backbone, verify_checkpoint

REPO = Path(__file__).resolve().parents[1]
PRETRAIN = [sys.executable, "-m", "unimix.cli", "pretrain"]

#: A 1-block ViT on 32 synthetic images: 2 steps of batch 16, a checkpoint after each.
TINY_RUN = {
    "data": {
        "dataset": "synthetic",
        "num_samples": 32,
        "image_size": 16,
        "batch_size": 16,
        "num_workers": 0,
    },
    "augment": {"global_size": 16, "local_size": 8, "num_local": 1},
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
        },
        "head": {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8},
    },
    "optim": {"warmup_epochs": 1},
    "epochs": 4,
    "max_steps": 2,
    "threads": 1,
    "checkpoint": {"every_steps": 1, "keep_last": 3},
    "logging": {"every_steps": 1, "progress_bar": False},
}


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def write_tiny_config(folder: Path, name: str = "tiny.yaml", **top: object) -> Path:
    """``TINY_RUN`` with ``top``-level sections replaced, as a YAML file in ``folder``."""
    cfg = json.loads(json.dumps(TINY_RUN))
    cfg.update(top)
    path = folder / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cap_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_cli(
    args: list[str], timeout: float = 180, cwd: Path = REPO, memory: int | None = None
) -> subprocess.CompletedProcess:
    """``args`` (after the Python interpreter) in a fresh process, under ``timeout`` and, with
    ``memory``, that many bytes of address space (a regression then fails, not the machine)."""
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(),
        cwd=cwd,
        preexec_fn=None if memory is None else partial(_cap_memory, memory),
    )


def finished_run(folder: Path) -> Path:
    """A tiny pretraining run written into ``folder/run`` (two checkpoints); returns it."""
    config = write_tiny_config(folder)
    out = folder / "run"
    done = subprocess.run(
        [*PRETRAIN, "-c", str(config), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list_checkpoints(out / "checkpoints")) == 2
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (plus ``/`` for folders)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            found[rel + "/"] = ""
        else:
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def assert_run_intact(run: Path, before: dict[str, str]) -> None:
    """``run`` is byte-identical to ``before`` and each of its checkpoints verifies and loads."""
    assert snapshot(run) == before
    checkpoints = list_checkpoints(run / "checkpoints")
    assert checkpoints
    for checkpoint in checkpoints:
        verify_checkpoint(checkpoint)
        model, meta = load_backbone(checkpoint)
        assert meta["backbone"] == TINY_RUN["model"]["backbone"]
