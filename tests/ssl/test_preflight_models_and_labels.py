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
from test_dino_train import PRETRAIN, REPO, _env, _metrics, _write_config

import unimix
from unimix.backbones import create_dino_backbone
from unimix.data import build_dataset
from unimix.data.shards_cli import main as shards_main
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.engine.preflight import PreflightError, preflight
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
        [
            "-c",
            str(config),
            "-o",
            str(out),
            "model.backbone=vit_tiny_patch16_224",
            "model.backbone_kwargs={img_size: 16, patch_size: 4, embed_dim: 16, depth: 1, "
            "num_heads: 2, dynamic_img_size: false}",
        ],
        out,
    )
    # the global crops are 16 px (its size); the 8-px local crops are what it refuses
    assert err.startswith("error: augment.local_size=8: model.backbone='vit_tiny_patch16_224'")
    assert "Input height (8) doesn't match model (16)" in err


def test_a_timm_vit_runs_the_32px_recipe_and_dinos_224_96_crops(tmp_path: Path) -> None:
    # quickstart's 32/16-px crops through vit_tiny_patch16_224: it crashed at step 1 in timm
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            *PRETRAIN,
            "-c",
            "quickstart",
            "-o",
            str(out),
            "model.backbone=vit_tiny_patch16_224",
            "max_steps=1",
            "data.num_samples=64",
            "data.batch_size=16",
            "eval.knn_at_end=false",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        cwd=REPO,
    )
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


def _holdout_refusal(folder: Path, holdout: int, unread: str = "") -> str:
    return (
        f"error: data.holdout={holdout}: data.dataset={str(folder)!r} (split 'train') has no "
        f"labels (a flat folder of images), and the k-NN's queries would be {holdout} of its "
        f"images{unread}; give it class folders, root/<split>/<class>/<image>, or use "
        "data.holdout=0 with a labeled eval.dataset, or switch the k-NN off "
        "(eval.knn_at_end=false eval.knn_every_epochs=0)\n"
    )


def test_a_holdout_of_an_unlabeled_training_folder_is_refused_before_the_first_step(
    tmp_path: Path, tiny_image_folder, capsys: pytest.CaptureFixture[str]
) -> None:
    # data.holdout makes the k-NN a validation k-NN on the training set's held-out images: on a
    # flat folder it trained to the end, then failed ("train_labels: negative label -1")
    flat = tiny_image_folder(None, per_class=40, size=16, name="flat")
    labeled = tiny_image_folder(("a", "b"), per_class=20, size=16, name="labeled")
    config, out = _write_config(tmp_path), tmp_path / "run"
    args = ["-c", str(config), "-o", str(out), f"data.dataset={flat}", "data.holdout=8"]
    at_end = ["eval.knn_every_epochs=0", "eval.knn_at_end=true"]
    assert _refused(capsys, [*args, *at_end], out) == _holdout_refusal(flat, 8)
    online = ["eval.knn_every_epochs=1", "eval.knn_at_end=false"]
    assert _refused(capsys, [*args, *online], out) == _holdout_refusal(flat, 8)
    # a labeled eval.dataset does not help: with a holdout the k-NN does not read it
    unread = " (eval.dataset is not read while data.holdout > 0)"
    err = _refused(capsys, [*args, *at_end, f"eval.dataset={labeled}"], out)
    assert err == _holdout_refusal(flat, 8, unread)
    # without any k-NN a holdout only trains on fewer images: the run works
    no_knn = ["eval.knn_every_epochs=0", "eval.knn_at_end=false", "max_steps=1"]
    assert main([*args, *no_knn]) == 0
    assert (out / "checkpoints" / "step_00000001").is_dir()
    # a labeled training folder gets its validation k-NN (bank 32 images, 8 queries)
    other = tmp_path / "labeled_run"
    args = ["-c", str(config), "-o", str(other), f"data.dataset={labeled}", "data.holdout=8"]
    assert main([*args, *at_end, "max_steps=1"]) == 0
    (knn,) = [m for m in _metrics(other) if "final_knn_top1_teacher" in m]
    assert knn["step"] == 1, knn


def test_a_holdout_of_an_unlabeled_folder_through_the_python_api(
    tmp_path: Path, tiny_image_folder
) -> None:
    flat = tiny_image_folder(None, per_class=40, size=16, name="flat")
    labeled = tmp_path / "labeled"
    for split in ("train", "test"):
        tiny_image_folder(("a", "b"), per_class=4, size=16, name=f"labeled/{split}")
    config, out = _write_config(tmp_path), tmp_path / "run"
    overrides = [f"data.dataset={flat}", "data.holdout=8", f"output_dir={out}", "max_steps=1"]
    with pytest.raises(PreflightError) as caught:
        unimix.pretrain(str(config), overrides=[*overrides, "eval.knn_at_end=true"])
    assert f"error: {caught.value}\n" == _holdout_refusal(flat, 8)
    assert not out.exists()
    # the caller's own k-NN sets: the held-out images are not queries, so the run works
    bank, queries = (build_dataset(labeled, split) for split in ("train", "test"))
    result = unimix.pretrain(
        str(config), eval_dataset=(bank, queries), overrides=[*overrides, "eval.knn_at_end=true"]
    )
    assert result.steps == 1 and result.knn is not None


def test_a_holdout_of_shards_is_refused_before_anything_is_written(
    tmp_path: Path, tiny_image_folder, capsys: pytest.CaptureFixture[str]
) -> None:
    # streamed shards cannot hold images out: the run said so only after making output_dir
    src = tiny_image_folder(("a", "b"), per_class=8, size=16, name="src")
    assert shards_main([str(src), str(tmp_path / "shards"), "--shard-size", "4"]) == 0
    config, out = _write_config(tmp_path), tmp_path / "run"
    shards = tmp_path / "shards"
    args = ["-c", str(config), "-o", str(out), f"data.dataset={shards}", "data.holdout=2"]
    err = _refused(capsys, [*args, "eval.knn_at_end=false"], out)
    assert err == (
        f"error: data.holdout=2: not supported for streaming shards (data.dataset="
        f"{str(shards)!r}); hold images out when writing the shards instead\n"
    )
