"""``data.holdout``'s edges (issue 25 follow-ups): a holdout as large as the training set is
one line before anything is written (it used to leave an empty ``output_dir``); a labeled
``eval.dataset`` that a holdout leaves unread is said at start and in the final k-NN's set;
``unimix knn RUN`` on a holdout run of a flat folder is one line (it failed late with
"train_labels: negative label -1"). Real folders and the real commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from test_dino_train import _write_config

from unimix.eval.knn_cli import main as knn_main
from unimix.ssl.pretrain_cli import main

NO_KNN = ["eval.knn_every_epochs=0", "eval.knn_at_end=false"]


@pytest.mark.parametrize("holdout", [16, 40])
def test_a_holdout_as_large_as_the_training_set_is_refused_before_anything_is_written(
    holdout: int, tmp_path: Path, tiny_image_folder, capsys: pytest.CaptureFixture[str]
) -> None:
    labeled = tiny_image_folder(("a", "b"), per_class=8, size=16, name="labeled")  # 16 images
    config, out = _write_config(tmp_path), tmp_path / "run"
    args = ["-c", str(config), "-o", str(out), f"data.dataset={labeled}"]
    assert main([*args, f"data.holdout={holdout}", *NO_KNN]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: data.holdout={holdout}: data.dataset={str(labeled)!r} (split 'train') has only "
        "16 images; hold out fewer than that\n"
    )
    assert not out.exists()
    # 4 images kept for a batch of 4 is a run
    assert main([*args, "data.holdout=12", "data.batch_size=4", *NO_KNN, "max_steps=1"]) == 0
    assert (out / "checkpoints" / "step_00000001").is_dir()


def test_a_run_refused_after_taking_its_folder_leaves_no_empty_folder(
    tmp_path: Path, tiny_image_folder, capsys: pytest.CaptureFixture[str]
) -> None:
    # a batch larger than the training set is found once output_dir is locked (made): the
    # refusal used to leave the empty folder behind
    labeled = tiny_image_folder(("a", "b"), per_class=8, size=16, name="labeled")  # 16 images
    config, out = _write_config(tmp_path), tmp_path / "runs" / "run"
    args = ["-c", str(config), "-o", str(out), f"data.dataset={labeled}", *NO_KNN]
    assert main([*args, "data.batch_size=32"]) == 2
    assert capsys.readouterr().err == "error: data.batch_size=32 exceeds the dataset's 16 images\n"
    assert not out.exists()
    # a folder the user made stays, empty as it was
    out.mkdir(parents=True)
    assert main([*args, "data.batch_size=32"]) == 2
    assert out.is_dir() and not any(out.iterdir())


def test_a_labeled_eval_dataset_left_unread_by_a_holdout_is_said(
    tmp_path: Path, tiny_image_folder, caplog: pytest.LogCaptureFixture
) -> None:
    train = tiny_image_folder(("a", "b"), per_class=20, size=16, name="train_set")
    other = tmp_path / "other"
    for split in ("train", "test"):
        tiny_image_folder(("a", "b"), per_class=4, size=16, name=f"other/{split}")
    config, out = _write_config(tmp_path), tmp_path / "run"
    args = ["-c", str(config), "-o", str(out), f"data.dataset={train}", "data.holdout=8"]
    at_end = ["eval.knn_every_epochs=0", "eval.knn_at_end=true", "max_steps=1"]
    with caplog.at_level(logging.WARNING, logger="unimix"):
        assert main([*args, *at_end, f"eval.dataset={other}"]) == 0
    notice = (
        f"data.holdout=8: the k-NN queries are 8 held-out training images; eval.dataset="
        f"{str(other)!r} is not read (set data.holdout=0 to evaluate on it)"
    )
    assert [r.getMessage() for r in caplog.records].count(notice) == 1
    knn = json.loads((out / "knn.json").read_text())
    assert knn["dataset"].endswith(f"(bank: the other 32; eval.dataset={str(other)!r} not read)")
    # without eval.dataset, or without a k-NN, there is nothing to say
    caplog.clear()
    for extra, name in (([], "run2"), ([f"eval.dataset={other}", *NO_KNN], "run3")):
        run = ["-c", str(config), "-o", str(tmp_path / name), f"data.dataset={train}"]
        assert main([*run, "data.holdout=8", *at_end, *extra]) == 0
    assert not [r for r in caplog.records if "is not read" in r.getMessage()]


def test_unimix_knn_on_a_holdout_run_of_a_flat_folder_is_one_line(
    tmp_path: Path, tiny_image_folder, capsys: pytest.CaptureFixture[str]
) -> None:
    flat = tiny_image_folder(None, per_class=24, size=16, name="flat")
    config, out = _write_config(tmp_path), tmp_path / "run"
    args = ["-c", str(config), "-o", str(out), f"data.dataset={flat}", "data.holdout=8"]
    assert main([*args, *NO_KNN, "max_steps=1"]) == 0  # trains on 16 images, no k-NN
    capsys.readouterr()
    assert knn_main([str(out), "--out", str(tmp_path / "knn.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "data.holdout=8" in err and "has no labels" in err and "--data" in err
    assert "negative label" not in err
    assert not (tmp_path / "knn.json").exists()
