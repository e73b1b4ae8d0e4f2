"""``unimix knn RUN`` without ``--data`` evaluates on the run's own eval set (from its
config.yaml), ``--data`` still overrides it, and a run dir without config.yaml is one error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import unimix
from unimix.eval.knn_cli import main as main_knn
from unimix.ssl import load_pretrain_config

#: The 96-image synthetic set at 16 px that tests/test_dino_train.saved_teacher_top1 reads.
TINY = [
    "data.dataset=synthetic",
    "data.num_samples=96",
    "data.image_size=16",
    "data.batch_size=16",
    "data.num_workers=0",
    "augment.global_size=16",
    "augment.num_local=0",
    "model.backbone=vit_tiny_patch16_224",
    "model.backbone_kwargs={img_size: 16, patch_size: 4, embed_dim: 16, depth: 1, num_heads: 2,"
    " mlp_ratio: 2, dynamic_img_size: true}",
    "model.head={out_dim: 32, hidden_dim: 16, bottleneck_dim: 8}",
    "optim.warmup_epochs=0",
    "epochs=1",
    "max_steps=2",
    "threads=1",
    "checkpoint.every_steps=0",
    "logging.progress_bar=false",
]


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-step run that held 24 of its 96 training images out."""
    out = tmp_path_factory.mktemp("knn_default") / "run"
    cfg = load_pretrain_config(None, [*TINY, "data.holdout=24", f"output_dir={out}"])
    unimix.pretrain(cfg)
    return out


def _knn(tmp_path: Path, *args: str) -> dict:
    report = tmp_path / "knn.json"
    assert (
        main_knn(
            [
                *args,
                "--k",
                "5",
                "--device",
                "cpu",
                "--no-progress",
                "--workers",
                "0",
                "--out",
                str(report),
            ]
        )
        == 0
    )
    return json.loads(report.read_text())


def test_knn_defaults_to_the_runs_held_out_images(held_out_run: Path, tmp_path: Path) -> None:
    from test_dino_train import saved_teacher_top1  # numpy brute force over the saved teacher

    report = _knn(tmp_path, str(held_out_run))
    assert (report["bank"], report["queries"]) == (72, 24)
    assert report["dataset"] == "synthetic"
    assert report["run_config"] == str(held_out_run / "config.yaml")
    assert report["top1"]["5"] == pytest.approx(saved_teacher_top1(held_out_run, held=24))


def test_data_overrides_the_runs_eval_set(held_out_run: Path, tmp_path: Path) -> None:
    report = _knn(tmp_path, str(held_out_run), "--data", "synthetic", "--limit-test", "10")
    assert report["queries"] == 10 and report["test_split"] == "test"
    assert "run_config" not in report


def test_a_checkpoint_inside_the_run_finds_its_config(held_out_run: Path, tmp_path: Path) -> None:
    (checkpoint,) = (held_out_run / "checkpoints").iterdir()
    assert _knn(tmp_path, str(checkpoint))["queries"] == 24


def test_no_config_and_no_data_is_one_line_exit_2(
    held_out_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(held_out_run / "checkpoints", bare / "checkpoints")
    assert main_knn([str(bare), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "config.yaml" in err and "--data" in err


def test_the_help_says_what_the_default_is(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main_knn(["--help"])
    assert "default: the run's own eval set" in " ".join(capsys.readouterr().out.split())


def test_same_eval_set_as_the_trainers_knn(tmp_path: Path) -> None:
    # eval.dataset with its own splits (no holdout): the CLI's reading of config.yaml picks the
    # images the pretraining run's k-NN (unimix.ssl.engine.datasets.knn_datasets) picks
    from unimix.config import save_config
    from unimix.eval import eval_transform
    from unimix.eval.eval_sets import run_eval_datasets
    from unimix.ssl.engine.datasets import knn_datasets

    cfg = load_pretrain_config(None, [*TINY, "eval.num_train=30", "eval.num_test=12", "seed=4"])
    save_config(cfg, tmp_path / "config.yaml")
    transform = eval_transform(16, cfg.data.mean, cfg.data.std)
    bank, queries, info = run_eval_datasets(tmp_path / "config.yaml", transform)
    ref_bank, ref_queries, description = knn_datasets(cfg)
    assert info["description"] == description
    for ours, ref in ((bank, ref_bank), (queries, ref_queries)):
        assert len(ours) == len(ref)
        for i in (0, len(ref) - 1):
            assert ours[i][1] == ref[i][1] and torch.equal(ours[i][0], ref[i][0])


def test_the_runs_config_is_read_by_the_config_loader(
    held_out_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the data/eval sections of config.yaml get the schema's checks (one line naming the key),
    # not a raw dict lookup; sections the eval layer does not read are left unread
    run = tmp_path / "run"
    shutil.copytree(held_out_run, run)
    config = run / "config.yaml"
    text = config.read_text()
    config.write_text(text.replace("holdout: 24", "holdout: many"))
    assert main_knn([str(run), "--device", "cpu", "--no-progress", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config key 'data.holdout': expected int" in err
    config.write_text(text + "a_section_of_a_later_version: {x: 1}\n")
    assert _knn(tmp_path, str(run))["queries"] == 24
