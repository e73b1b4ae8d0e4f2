"""Every dataset and path a pretraining run needs is checked before any work: one line naming
the key and its value, exit 2, nothing written (issue 18, cases 1 and 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from test_dino_train import PRETRAIN, REPO, _env, _write_config

from unimix.data import DATASET_NAMES
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.engine import preflight as preflight_module
from unimix.ssl.engine.preflight import PreflightError, checkpoint_bytes, preflight
from unimix.ssl.pretrain_cli import main


def _refused(capsys: pytest.CaptureFixture[str], args: list[str], *needles: str) -> str:
    """``unimix pretrain args`` exits 2 with one ``error:`` line holding every needle."""
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def test_missing_eval_dataset_fails_at_start_in_one_line(tmp_path: Path) -> None:
    # quickstart ends with a k-NN: the missing folder used to fail only after training.
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            *PRETRAIN,
            "-c",
            "quickstart",
            "-o",
            str(out),
            "eval.dataset=/missing/path",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    names = ", ".join(DATASET_NAMES)
    expected = f"error: eval.dataset='/missing/path': no such folder and not one of {names}\n"
    assert proc.stderr == expected
    assert not out.exists()


@pytest.mark.parametrize(
    "overrides, needles",
    [
        # the online k-NN alone (every epoch) needs the data too
        (
            ["eval.dataset=/missing/path", "eval.knn_at_end=false", "eval.knn_every_epochs=1"],
            ["eval.dataset='/missing/path'", "no such folder"],
        ),
        (["data.dataset=/missing/train"], ["data.dataset='/missing/train'", "no such folder"]),
        (["data.split=validation"], ["data.dataset='synthetic'", "'validation'"]),
        (["eval.test_split=train"], ["eval.test_split='train'", "eval.train_split"]),
        (["eval.root=/missing/root"], ["eval.root='/missing/root'"]),
        # the checkpoint estimate builds the networks (on the meta device): a bad option shows
        (["model.backbone_kwargs={foo: 1}"], ["model.backbone_kwargs={'foo': 1}", "'foo'"]),
    ],
)
def test_bad_data_keys_are_refused_before_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], needles: list[str]
) -> None:
    out = tmp_path / "run"
    _refused(capsys, ["-c", "quickstart", "-o", str(out), *overrides], *needles)
    assert not out.exists()


def test_torchvision_set_missing_from_its_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, root = tmp_path / "run", tmp_path / "empty_root"
    root.mkdir()
    args = ["-c", "quickstart", "-o", str(out), "data.dataset=cifar10", f"data.root={root}"]
    _refused(capsys, args, "data.dataset='cifar10'", "cifar-10-batches-py", "data.download=true")
    # the k-NN's own set: eval.root is the key to set (eval sets are never downloaded)
    args = ["-c", "quickstart", "-o", str(out), "eval.dataset=cifar100", f"eval.root={root}"]
    err = _refused(capsys, args, "eval.dataset='cifar100'", "eval.root")
    assert "download" not in err
    assert not out.exists()


def test_eval_folder_is_built_as_the_knn_builds_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_image_folder
) -> None:
    flat = tiny_image_folder(classes=None, name="flat")
    out = tmp_path / "run"
    # a folder given a root: build_dataset refuses the option (the k-NN used to, at the end)
    args = ["-c", "quickstart", "-o", str(out), f"eval.dataset={flat}", f"eval.root={tmp_path}"]
    _refused(capsys, args, f"eval.dataset='{flat}'", "'root'")
    empty = tmp_path / "labeled"
    (empty / "cat").mkdir(parents=True)
    args = ["-c", "quickstart", "-o", str(out), f"eval.dataset={empty}"]
    _refused(capsys, args, f"eval.dataset='{empty}'", "contains no images")
    assert not out.exists()


def test_output_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    _refused(capsys, ["-c", "quickstart", "-o", str(file)], f"output_dir='{file}'", "a file")
    _refused(capsys, ["-c", "quickstart", "-o", str(file / "run")], "which is a file")
    assert file.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_read_only_output_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() == 0:  # root writes through 0o500: deny what a read-only mount would
        real_access = os.access
        monkeypatch.setattr(
            preflight_module.os,
            "access",
            lambda p, mode: False if Path(p) == locked else real_access(p, mode),
        )
    try:
        _refused(
            capsys,
            ["-c", "quickstart", "-o", str(locked / "run")],
            f"output_dir='{locked / 'run'}'",
            "cannot be created in",
            str(locked),
        )
        _refused(capsys, ["-c", "quickstart", "-o", str(locked)], "is not writable")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_full_disk_is_refused_naming_the_space_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(
        preflight_module.shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20)
    )
    out = tmp_path / "run"
    err = _refused(capsys, ["-c", "quickstart", "-o", str(out)], "output_dir=", "1.0 MB free")
    needed = float(err.split("needs ~")[1].split(" MB")[0])
    # quickstart's student and teacher are 2.5 M parameters each in fp32 (~10 MB apiece)
    assert 40 < needed < 120
    assert not out.exists()


def test_missing_resume_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, missing = tmp_path / "run", tmp_path / "nope" / "step_00000004"
    _refused(
        capsys,
        ["-c", "quickstart", "-o", str(out), "--resume", str(missing)],
        f"--resume {missing}",
        "no such directory",
    )
    assert not out.exists()


@pytest.mark.slow
def test_checkpoint_estimate_covers_a_real_checkpoint(tmp_path: Path) -> None:
    # The reference is a checkpoint the trainer really wrote, for AdamW and for SGD.
    for optim in ("adamw", "sgd"):
        config = _write_config(tmp_path, max_steps=1, optim={"name": optim, "warmup_epochs": 1})
        out = tmp_path / optim
        subprocess.run(
            [sys.executable, *PRETRAIN, "-c", str(config), "-o", str(out)],
            check=True,
            capture_output=True,
            timeout=120,
            env=_env(),
            cwd=REPO,
        )
        (written,) = (out / "checkpoints").iterdir()
        size = sum(p.stat().st_size for p in written.iterdir())
        estimate = checkpoint_bytes(load_pretrain_config(config))
        # The estimate counts the tensors; the rest (file headers, the RNG states' pickle, the
        # JSON files) is a few tens of kB, well inside the margin the check adds.
        assert 0 <= size - estimate < 64 * 1024 < preflight_module.MARGIN_BYTES, (optim, size)


def test_a_callers_own_datasets_are_not_looked_for(tmp_path: Path) -> None:
    # unimix.pretrain(config, dataset=..., eval_dataset=...): the config's sets are not read.
    out = tmp_path / "run"
    cfg = load_pretrain_config(
        "quickstart",
        ["data.dataset=/missing/train", "eval.dataset=/missing/eval", f"output_dir={out}"],
    )
    with pytest.raises(PreflightError, match="^data.dataset='/missing/train'"):
        preflight(cfg)
    with pytest.raises(PreflightError, match="^eval.dataset='/missing/eval'"):
        preflight(cfg, own_train=True)
    preflight(cfg, own_train=True, own_eval=True)
    assert not out.exists()
