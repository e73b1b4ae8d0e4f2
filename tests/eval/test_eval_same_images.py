"""A k-NN whose bank holds its own queries (issue 25, item 1): a labeled folder without
``train/`` and ``test/`` serves both splits from the folder itself, so every query found itself
and random-noise images scored 100%. Bank and queries are compared as files (folders by device
and inode), not by split name: a refusal in one line, in pretraining (before anything is
written), ``unimix knn`` (with ``--data`` or from the run's config) and ``unimix linear``; a
partial overlap is one warning line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from run_snapshot import assert_run_intact, finished_run, snapshot

from unimix.backbones import create_dino_backbone
from unimix.cli import main as unimix_main
from unimix.data import build_dataset
from unimix.data.distinct import check_distinct, shared_files
from unimix.eval import export_extractor
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.engine.datasets import check_eval_dataset
from unimix.ssl.engine.preflight import PreflightError, preflight
from unimix.ssl.pretrain_cli import main as pretrain_main

CLASSES = ("a", "b")
PER_CLASS = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("finished"))


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_dino_backbone("poolformer_nano").eval()
    meta = {"backbone": "poolformer_nano", "image_size": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
    return export_extractor(model, meta, tmp_path_factory.mktemp("model") / "ext", "safetensors")


@pytest.fixture
def flat_labeled(tiny_image_folder) -> Path:
    """``noise/{a,b}/`` of 8 random-noise PNGs each: labeled, no train/ or test/."""
    return tiny_image_folder(CLASSES, PER_CLASS, size=16, name="noise")


def _realpaths(dataset) -> set[str]:
    return {os.path.realpath(f) for f in dataset.files}


def _one_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# -------------------------------------------------------------------------- the comparison
def test_shared_files_match_resolved_paths(tiny_image_folder, tmp_path: Path) -> None:
    root = tiny_image_folder(CLASSES, PER_CLASS, name="d/train").parent
    (root / "test").symlink_to("train")  # another name, the same files
    tiny_image_folder(CLASSES, 3, name="e/test")
    other = tmp_path / "e"
    (other / "train").mkdir()
    (other / "train" / "a").symlink_to(root / "train" / "a")  # one class shared
    tiny_image_folder(("b",), 2, name="e/train")
    cases = [
        (root, "train", "test"),
        (root, "train", "train"),
        (other, "train", "test"),
        (other, "test", "train"),
    ]
    for folder, bank_split, query_split in cases:
        bank, queries = build_dataset(folder, bank_split), build_dataset(folder, query_split)
        # the reference: paths with every link resolved, intersected
        expected = len(_realpaths(bank) & _realpaths(queries))
        assert shared_files(bank, queries) == expected, (folder, bank_split, query_split)
    assert shared_files(*(build_dataset(root, s) for s in ("train", "test"))) == 2 * PER_CLASS
    assert shared_files(*(build_dataset(other, s) for s in ("train", "test"))) == 0
    synthetic = build_dataset("synthetic", "train", num_samples=4, image_size=8)
    assert shared_files(synthetic, build_dataset("synthetic", "test", num_samples=4)) is None


def test_partial_overlap_warns_with_the_count(tiny_image_folder, tmp_path: Path) -> None:
    root = tiny_image_folder(CLASSES, PER_CLASS, name="p/train").parent
    (root / "test").mkdir()
    (root / "test" / "a").symlink_to(root / "train" / "a")
    tiny_image_folder(("b",), 3, name="p/test")
    bank, queries = build_dataset(root, "train"), build_dataset(root, "test")
    with pytest.warns(Warning, match=rf"^what: {PER_CLASS} of the {PER_CLASS + 3} k-NN queries"):
        check_distinct(bank, queries, "what", "hint")


# ----------------------------------------------------------------------- knn and linear CLI
@pytest.mark.parametrize("command", ["knn", "linear"])
def test_cli_refuses_a_folder_without_splits(
    flat_labeled: Path,
    extractor: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
) -> None:
    report = tmp_path / f"{command}.json"
    report.write_text('{"earlier": "report"}')  # a report already written there is kept
    argv = [
        command,
        str(extractor),
        "--data",
        str(flat_labeled),
        "--out",
        str(report),
        "--no-progress",
        "--device",
        "cpu",
        "--batch-size",
        "8",
    ]
    assert unimix_main(argv) == 2
    _one_error(capsys, f"--data {flat_labeled}", f"same {2 * PER_CLASS} images", "train/ and test/")
    assert json.loads(report.read_text()) == {"earlier": "report"}


def test_cli_refuses_split_names_that_link_to_the_same_folder(
    flat_labeled: Path, extractor: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "linked"
    root.mkdir()
    (root / "train").symlink_to(flat_labeled)
    (root / "test").symlink_to(flat_labeled)
    argv = [
        "knn",
        str(extractor),
        "--data",
        str(root),
        "--out",
        str(tmp_path / "k.json"),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert unimix_main(argv) == 2
    _one_error(capsys, "splits 'train' and 'test'", f"same {2 * PER_CLASS} images")
    assert not (tmp_path / "k.json").exists()


# ------------------------------------------------------------------------------ pretraining
def test_pretraining_refuses_before_writing_anything(
    run: Path, flat_labeled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(run)
    config = str(run / "config.yaml")
    # the k-NN at the end, and the online k-NN: both on the finished run (--resume auto)
    for knn in (["eval.knn_at_end=true"], ["eval.knn_every_epochs=1"]):
        args = ["-c", config, "-o", str(run), "--resume", "auto", f"eval.dataset={flat_labeled}"]
        assert pretrain_main([*args, *knn]) == 2
        _one_error(
            capsys,
            f"eval.dataset='{flat_labeled}'",
            f"same {2 * PER_CLASS} images",
            "eval.train_split",
        )
    assert_run_intact(run, before)
    fresh = tmp_path / "fresh"
    args = ["-c", config, "-o", str(fresh), f"data.dataset={flat_labeled}", "eval.knn_at_end=true"]
    assert pretrain_main(args) == 2
    _one_error(capsys, "data.dataset=", "data.holdout=N")
    assert not fresh.exists()
    # with data.holdout the k-NN is on held-out training images: accepted
    preflight(load_pretrain_config(config, [*args[4:], "data.holdout=4", f"output_dir={fresh}"]))
    assert not fresh.exists()


def test_callers_own_pair_of_the_same_images_is_refused(flat_labeled: Path) -> None:
    dataset = build_dataset(flat_labeled)
    with pytest.raises(ValueError, match=r"^eval_dataset: the k-NN bank and its queries are"):
        check_eval_dataset((dataset, dataset))
    with pytest.raises(ValueError, match=r"^eval_dataset: .* same 16 images"):
        check_eval_dataset((dataset, build_dataset(flat_labeled, "test")))


def test_knn_on_a_runs_own_eval_set_refuses_the_same_images(
    run: Path, flat_labeled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run whose config names such a folder (written before this check existed)
    copy = tmp_path / "old_run"
    shutil.copytree(run, copy)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["eval"]["dataset"] = str(flat_labeled)
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    before = snapshot(copy)
    argv = ["knn", str(copy), "--out", str(tmp_path / "k.json"), "--no-progress", "--device", "cpu"]
    assert unimix_main(argv) == 2
    _one_error(capsys, f"eval.dataset='{flat_labeled}'", f"same {2 * PER_CLASS} images")
    assert_run_intact(copy, before)
    overrides = [
        f"data.dataset={flat_labeled}",
        "eval.dataset=null",
        "eval.knn_at_end=true",
        f"output_dir={tmp_path / 'x'}",
    ]
    with pytest.raises(PreflightError, match="data.holdout"):  # the same through the preflight
        preflight(load_pretrain_config(str(copy / "config.yaml"), overrides))


# --------------------------------------------------------------------------- streamed shards
@pytest.fixture
def flat_shards(flat_labeled: Path, tmp_path: Path) -> Path:
    """The flat labeled folder written as shards into one folder (no train/ or test/)."""
    from unimix.data import write_shards

    out = tmp_path / "flat_shards"
    write_shards(flat_labeled, out, shard_size=4)
    return out


def test_shards_of_one_folder_are_the_same_images(flat_shards: Path, tmp_path: Path) -> None:
    bank, queries = build_dataset(flat_shards, "train"), build_dataset(flat_shards, "test")
    assert shared_files(bank, queries) == len(queries) == 2 * PER_CLASS
    half = tmp_path / "half"
    half.mkdir()
    for shard in sorted(flat_shards.glob("*.tar"))[:2]:  # a link to two of the four shards
        (half / shard.name).symlink_to(shard)
    assert shared_files(bank, build_dataset(half, "test")) == 2 * 4


def test_knn_refuses_shards_serving_bank_and_queries(
    flat_shards: Path, extractor: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "knn",
        str(extractor),
        "--data",
        str(flat_shards),
        "--out",
        str(tmp_path / "k.json"),
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert unimix_main(argv) == 2
    _one_error(capsys, f"--data {flat_shards}", f"same {2 * PER_CLASS} images, of {flat_shards}")
    assert not (tmp_path / "k.json").exists()
