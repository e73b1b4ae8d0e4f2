"""Checked before the first step (issue 25 items 11 and 14, issue 27 item 6): an unlabeled
``eval.dataset``, crop sizes a backbone does not take, a timm ViT with the 32-px recipes or a
config with DINO's 224/96 crops, and shards without ``eval.dataset``: each is one ``error:``
line naming the key, exit 2, nothing written — or, where a user expects it, a run that works.
Real folders, real shards and the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_dino_train import PRETRAIN, REPO, _env, _write_config

from unimix.backbones import create_dino_backbone
from unimix.data.shards_cli import main as shards_main
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.engine.preflight import preflight
from unimix.ssl.pretrain_cli import main


def _refused(capsys: pytest.CaptureFixture[str], args: list[str], out: Path) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists()  # refused before anything was written
    return err


def test_an_unlabeled_eval_dataset_is_refused_before_the_first_step(
    tmp_path: Path, tiny_image_folder, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = tiny_image_folder(None, per_class=6, name="flat")  # images, no class folders
    for split in ("train", "test"):
        (flat / split).mkdir()
        for image in sorted(flat.glob("*.png"))[:3]:
            image.rename(flat / split / image.name)
    config, out = _write_config(tmp_path), tmp_path / "run"
    args = ["-c", str(config), "-o", str(out), f"eval.dataset={flat}", "eval.knn_at_end=true"]
    err = _refused(capsys, args, out)
    assert err.startswith(f"error: eval.dataset={str(flat)!r} (split 'train'): no labels")
    assert "eval.knn_at_end=false" in err
    # without a k-NN the same folder is no concern
    assert main([*args[:-1], "eval.knn_at_end=false", "max_steps=1"]) == 0


def test_crop_sizes_a_backbone_does_not_take_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = _write_config(tmp_path), tmp_path / "run"
    err = _refused(
        capsys,
        ["-c", str(config), "-o", str(out), "model.backbone=vit_tiny_patch16_224",
         "model.backbone_kwargs={img_size: 16, patch_size: 4, embed_dim: 16, depth: 1, "
         "num_heads: 2, dynamic_img_size: false}"],
        out,
    )  # fmt: skip
    # the global crops are 16 px (its size); the 8-px local crops are what it refuses
    assert err.startswith("error: augment.local_size=8: model.backbone='vit_tiny_patch16_224'")
    assert "Input height (8) doesn't match model (16)" in err


def test_a_timm_vit_runs_the_32px_recipe_and_dinos_224_96_crops(tmp_path: Path) -> None:
    # quickstart's 32/16-px crops through vit_tiny_patch16_224: it crashed at step 1 in timm
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, *PRETRAIN, "-c", "quickstart", "-o", str(out),
         "model.backbone=vit_tiny_patch16_224", "max_steps=1", "data.num_samples=64",
         "data.batch_size=16", "eval.knn_at_end=false"],
        capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "checkpoints" / "step_00000001").is_dir()
    # a YAML that sets no model.*: the default ViT with DINO's 224-px globals and 96-px locals
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text(f"data: {{dataset: synthetic}}\noutput_dir: {tmp_path / 'mine'}\n")
    cfg = load_pretrain_config(str(yaml_file), [])
    assert (cfg.augment.global_size, cfg.augment.local_size) == (224, 96)
    preflight(cfg)  # passes: the backbone takes both sizes
    backbone = create_dino_backbone(cfg.model.backbone, **cfg.model.backbone_kwargs).eval()
    with torch.no_grad():
        for size in (224, 96):
            assert backbone(torch.zeros(1, 3, size, size)).shape == (1, backbone.num_features)


def test_shards_without_eval_dataset_are_refused_before_the_first_step(
    tmp_path: Path, tiny_image_folder, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tiny_image_folder(("a", "b"), per_class=8, size=16, name="src")
    assert shards_main([str(src), str(tmp_path / "shards"), "--shard-size", "4"]) == 0
    config, out = _write_config(tmp_path), tmp_path / "run"
    args = ["-c", str(config), "-o", str(out), f"data.dataset={tmp_path / 'shards'}"]
    err = _refused(capsys, [*args, "eval.knn_at_end=true"], out)
    assert err.startswith("error: eval.dataset: required for a k-NN when data.dataset is shards")
    # pipe: commands are not read: one line saying what to do instead
    pipe = "pipe:curl -s https://example.org/shard-{000000..000009}.tar"
    err = _refused(capsys, ["-c", str(config), "-o", str(out), f"data.dataset={pipe}"], out)
    assert "pipe: shards are not read" in err and "copy or mount them" in err
