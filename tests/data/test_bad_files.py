"""Unreadable image files (issue 18, cases 2, 7, 9): ``data.strict`` / ``--strict`` stop at the
first one in one line (exit 2); by default they are dropped from k-NN banks, queries and linear
probe features (never replaced by a neighbour's image), and each is reported on one clean line
through tqdm's writer, with a summary count at the end."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from unimix.backbones import create_dino_backbone
from unimix.cli import main as unimix_main
from unimix.config import ConfigError
from unimix.data import build_dataset
from unimix.eval import eval_transform, export_extractor, extract_features, knn_evaluate
from unimix.eval.load import load_extractor
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.pretrain_cli import main as pretrain_main

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("a", "b", "c")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


# --------------------------------------------------------------------------- fixtures
def _garbage(path: Path) -> None:
    path.write_bytes(b"not an image at all " * 20)


def _truncated(path: Path) -> None:
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])


@pytest.fixture
def bad_tree(tiny_image_folder) -> Path:
    """``data/{train,test}/<class>/``: 4 + 2 good images per class, plus 3 unreadable train
    files in three classes (garbage, truncated, empty; each sorts last in its class, so the
    next readable image is another class's) and 1 unreadable test file."""
    train = tiny_image_folder(CLASSES, 4, size=8, name="data/train")
    test = tiny_image_folder(CLASSES, 2, size=12, name="data/test")
    _garbage(train / "a" / "a_bad.jpg")
    _truncated(train / "b" / "b_bad.jpg")
    (train / "c" / "c_bad.jpg").write_bytes(b"")
    _garbage(test / "b" / "b_bad.jpg")
    return train.parent


def _readable(split: Path) -> tuple[list[Path], list[int]]:
    """Independent listing: every file under ``split/<class>/`` that PIL decodes, and its label."""
    files, labels = [], []
    for label, name in enumerate(sorted(p.name for p in split.iterdir())):
        for path in sorted((split / name).iterdir()):
            try:
                with Image.open(path) as image:
                    image.load()
            except Exception:
                continue
            files.append(path)
            labels.append(label)
    return files, labels


def _reference_features(model, files: list[Path], size: int) -> np.ndarray:
    transform = eval_transform(size, MEAN, STD)
    with torch.no_grad():
        batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in files])
        return model.eval()(batch).double().numpy()


def _brute_force_top1(train, y_train, test, y_test, k: int, temperature: float) -> float:
    """DINO's weighted k-NN in numpy: cosine, k nearest, exp(sim / T) votes, lowest class on ties."""
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = unit(test) @ unit(train).T
    hits = 0
    for row, truth in zip(sims, y_test, strict=True):
        nearest = np.argsort(-row, kind="stable")[:k]
        votes = np.zeros(max(max(y_train), max(y_test)) + 1)
        np.add.at(votes, np.asarray(y_train)[nearest], np.exp(row[nearest] / temperature))
        hits += int(np.argmax(votes) == truth)
    return 100.0 * hits / len(y_test)


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(5)
    model = create_dino_backbone("poolformer_nano").eval()
    meta = {"backbone": "poolformer_nano", "image_size": 16, "mean": list(MEAN), "std": list(STD)}
    return export_extractor(model, meta, tmp_path_factory.mktemp("model") / "ext", "safetensors")


# ------------------------------------------------------------------ case 7: dropped rows
def test_extract_features_drops_unreadable_files(bad_tree: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 12))
    transform = eval_transform(8, MEAN, STD)
    banks = {}
    for split in ("train", "test"):
        dataset = build_dataset(bad_tree, split, transform=transform)
        with pytest.warns(Warning):  # the skipped files' lines and the summary
            x, y = extract_features(model, dataset, batch_size=4, progress=False)
        files, labels = _readable(bad_tree / split)
        assert len(dataset) == len(files) + (3 if split == "train" else 1)
        assert x.shape == (len(files), 12) and y.tolist() == labels
        np.testing.assert_allclose(
            x.double().numpy(), _reference_features(model, files, 8), rtol=1e-5, atol=1e-5
        )
        banks[split] = (x, y)
    result = knn_evaluate(*banks["train"], *banks["test"], ks=(3,), temperature=0.07)
    assert result["bank"] == 12 and result["queries"] == 6
    reference = _brute_force_top1(*(t.numpy() for t in (*banks["train"], *banks["test"])), 3, 0.07)
    assert result["top1"][3] == pytest.approx(reference)


def _knn_argv(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "knn",
        str(model),
        "--data",
        str(data),
        "--k",
        "3",
        "--batch-size",
        "4",
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow
def test_knn_cli_bank_holds_only_readable_images(
    bad_tree: Path, extractor: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "knn.json"
    with pytest.warns(Warning):
        assert (
            unimix_main(_knn_argv(extractor, bad_tree, out, "--workers", "0", "--no-progress")) == 0
        )
    report = json.loads(out.read_text())
    (train, y_train), (test, y_test) = _readable(bad_tree / "train"), _readable(bad_tree / "test")
    assert (report["bank"], report["queries"]) == (len(train), len(test)) == (12, 6)
    assert report["skipped"] == {"train": 3, "test": 1}
    model = load_extractor(extractor)
    x_train, x_test = (_reference_features(model, f, 16) for f in (train, test))
    assert report["top1"]["3"] == pytest.approx(
        _brute_force_top1(x_train, y_train, x_test, y_test, 3, 0.07)
    )
    # The memory-mapped bank (compacted in place) gives the same numbers.
    stored = tmp_path / "stored.json"
    with pytest.warns(Warning):
        argv = _knn_argv(
            extractor,
            bad_tree,
            stored,
            "--no-progress",
            "--workers",
            "0",
            "--features-cache",
            str(tmp_path / "cache"),
        )
        assert unimix_main(argv) == 0
    again = json.loads(stored.read_text())
    assert (again["bank"], again["top1"], again["skipped"]) == (
        12,
        report["top1"],
        report["skipped"],
    )
    capsys.readouterr()


def test_linear_cli_features_hold_only_readable_images(
    bad_tree: Path, extractor: Path, tmp_path: Path
) -> None:
    out = tmp_path / "linear.json"
    argv = [
        "linear",
        str(extractor),
        "--data",
        str(bad_tree),
        "--epochs",
        "2",
        "--workers",
        "0",
        "--val-fraction",
        "0.25",
        "--no-progress",
        "--out",
        str(out),
    ]
    with pytest.warns(Warning):
        assert unimix_main(argv) == 0
    report = json.loads(out.read_text())
    assert report["train_size"] + report["val_size"] == len(_readable(bad_tree / "train")[0])
    assert report["test_size"] == len(_readable(bad_tree / "test")[0])
    assert report["skipped"] == {"train": 3, "test": 1}


# ------------------------------------------------------------------- case 2: strict mode
def test_data_strict_is_a_config_key() -> None:
    assert load_pretrain_config("quickstart", []).data.strict is False
    assert load_pretrain_config("quickstart", ["data.strict=true"]).data.strict is True
    with pytest.raises(ConfigError, match=r"data\.strict.*expected bool"):
        load_pretrain_config("quickstart", ["data.strict=maybe"])


def _one_error_line(err: str, bad: list[Path]) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot decode image "), err
    assert any(str(p) in lines[0] for p in bad), err


def test_knn_strict_stops_at_the_first_unreadable_file(
    bad_tree: Path, extractor: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = _knn_argv(extractor, bad_tree, tmp_path / "k.json", "--strict", "--workers", "1")
    assert unimix_main([*argv, "--no-progress"]) == 2
    bad = [bad_tree / "train" / c / f"{c}_bad.jpg" for c in CLASSES]
    _one_error_line(capsys.readouterr().err, bad)
    assert not (tmp_path / "k.json").exists()


TINY = {
    "data": {"split": "train", "batch_size": 15, "num_workers": 1, "image_size": 8},
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
    "epochs": 1,
    "threads": 1,
    "checkpoint": {"every_steps": 0, "keep_last": 1},
}


def _pretrain_config(tmp_path: Path, data: Path, **logging: object) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["dataset"] = str(data)
    cfg["logging"] = {"every_steps": 1, **logging}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_pretrain_data_strict_exits_2_naming_the_file(
    bad_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _pretrain_config(tmp_path, bad_tree, progress_bar=False)
    code = pretrain_main(["-c", str(config), "-o", str(tmp_path / "run"), "data.strict=true"])
    assert code == 2  # the first step reads all 15 files (batch 15), in a loader worker
    bad = [bad_tree / "train" / c / f"{c}_bad.jpg" for c in CLASSES]
    _one_error_line(capsys.readouterr().err, bad)


# ------------------------------------------------------- case 9: one clean line each, a count
def _check_clean_lines(stderr: str, first: Path, count: int) -> list[str]:
    """Every line about an unreadable file is ``warning: ...`` alone on its line (no progress
    bar before it, no source echo, no stack); returns those lines."""
    assert "warnings.warn" not in stderr and "Traceback" not in stderr, stderr
    assert "UnreadableImageWarning" not in stderr and 'File "' not in stderr, stderr
    lines = [ln.split("\r")[-1] for ln in stderr.split("\n") if "unreadable" in ln]
    for raw in (ln for ln in stderr.split("\n") if "unreadable" in ln):
        assert raw.replace("\r", "").strip().startswith("warning: "), repr(raw)
    summary = f"warning: skipped {count} unreadable images (first: {first}): "
    assert sum(ln.startswith(summary) for ln in lines) == 1, lines
    return lines


@pytest.mark.slow
def test_knn_warnings_are_single_lines_beside_the_progress_bar(
    bad_tree: Path, extractor: Path, tmp_path: Path
) -> None:
    argv = _knn_argv(extractor, bad_tree, tmp_path / "k.json", "--workers", "1")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "unimix.cli", *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "features:" in done.stderr  # the bar was drawn: the lines below were written past it
    lines = _check_clean_lines(done.stderr, bad_tree / "train" / "a" / "a_bad.jpg", 3)
    for c in CLASSES:
        bad = bad_tree / "train" / c / f"{c}_bad.jpg"
        assert (
            sum(ln.startswith(f"warning: skipping unreadable image {bad}: ") for ln in lines) == 1
        )
    test_summary = f"warning: skipped 1 unreadable image (first: {bad_tree / 'test/b/b_bad.jpg'})"
    assert any(ln.startswith(test_summary) for ln in lines), lines
    assert len(lines) == 3 + 1 + 1 + 1  # one line per file, one summary per split


@pytest.mark.slow
def test_pretrain_skips_and_counts_with_clean_lines(bad_tree: Path, tmp_path: Path) -> None:
    config = _pretrain_config(tmp_path, bad_tree, progress_bar=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "unimix.cli",
        "pretrain",
        "-c",
        str(config),
        "-o",
        str(tmp_path / "run"),
        "max_steps=1",
    ]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = _check_clean_lines(done.stderr, bad_tree / "train" / "a" / "a_bad.jpg", 3)
    assert len([ln for ln in lines if re.match(r"warning: skipping unreadable image ", ln)]) == 3


@pytest.mark.slow
def test_two_processes_drop_the_same_rows_as_one(
    bad_tree: Path, extractor: Path, tmp_path: Path
) -> None:
    """Each process reads its block of files (bad files in both blocks); the dropped rows are
    gathered, so the bank, the counts and the predictions are those of one process."""
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    extra = ("--no-progress", "--predictions", "--device", "cpu")
    with pytest.warns(Warning):
        assert unimix_main(_knn_argv(extractor, bad_tree, one, "--workers", "0", *extra)) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
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
        port,
        "-m",
        "unimix.cli",
        *_knn_argv(extractor, bad_tree, two, *extra),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert b["processes"] == 2 and (a["bank"], a["queries"]) == (b["bank"], b["queries"]) == (12, 6)
    assert a["skipped"] == b["skipped"] and a["predictions"] == b["predictions"]
    summary = f"skipped 3 unreadable images (first: {bad_tree / 'train' / 'a' / 'a_bad.jpg'})"
    assert done.stderr.count(summary) == 1, done.stderr[-3000:]
