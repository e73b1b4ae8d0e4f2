"""Checkpoints a resume must not trust (issue 25, items 12, 15 and 20): a safetensors file
written short whose manifest checksum matches, a run resumed with another head size, a crafted
``random_states_0.pkl``, and the mode of every file a checkpoint holds. Real runs of
``unimix pretrain`` on a tiny ViT (in this process), real damaged files."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_dino_train import REPO, TINY, _env

from unimix.checkpoint import (
    CheckpointError,
    find_resume_checkpoint,
    list_checkpoints,
    load_backbone,
    verify_checkpoint,
)
from unimix.ssl.pretrain_cli import main


def _pretrain(tmp_path: Path, *args: str) -> int:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "eval": {"knn_at_end": False}}))
    return main(["-c", str(config), "-o", str(tmp_path / "run"), *args])


def _steps_run(out: Path) -> list[int]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["step"] for r in map(json.loads, lines) if "loss" in r]


def _reseal(checkpoint: Path) -> None:
    """The manifest's sizes and SHA-256 (hashlib) rewritten: only the content is wrong."""
    state_file = checkpoint / "trainer_state.json"
    state = json.loads(state_file.read_text())
    for name in state["files"]:
        data = (checkpoint / name).read_bytes()
        state["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    state_file.write_text(json.dumps(state))


def _all_load(root: Path) -> None:
    for checkpoint in list_checkpoints(root):
        verify_checkpoint(checkpoint)
        load_backbone(checkpoint)


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_a_truncated_safetensors_file_with_a_matching_checksum_is_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pretrain(tmp_path, "max_steps=8") == 0
    out = tmp_path / "run"
    root = out / "checkpoints"
    teacher = root / "step_00000008" / "teacher.safetensors"
    teacher.write_bytes(teacher.read_bytes()[:-100])  # written short...
    _reseal(root / "step_00000008")  # ...and sealed so: its checksum matches
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        verify_checkpoint(root / "step_00000008")
    assert find_resume_checkpoint(out) == root / "step_00000004"

    capsys.readouterr()
    assert _pretrain(tmp_path, "--resume", "auto", "max_steps=12") == 0
    printed, err = capsys.readouterr()
    assert "Traceback" not in err and "SafetensorError" not in err
    warnings = [line for line in err.splitlines() if line.startswith("warning: skipping")]
    assert warnings == [
        f"warning: skipping checkpoint step_00000008: {teacher}: not a readable safetensors file "
        "(Error while deserializing header: incomplete metadata, file not fully covered); "
        "falling back to the previous one"
    ]
    assert f"resumed from {root / 'step_00000004'}" in printed
    assert _steps_run(out)[-8:] == [5, 6, 7, 8, 9, 10, 11, 12]
    _all_load(root)  # step 8 written again, whole


def test_resuming_with_another_head_size_names_the_shapes_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _pretrain(tmp_path, "max_steps=4") == 0
    out = tmp_path / "run"
    kept = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _pretrain(tmp_path, "--resume", "auto", "model.head.out_dim=32") == 2
    err = capsys.readouterr().err
    student = out / "checkpoints" / "step_00000004" / "student.safetensors"
    assert err.count("\n") == 1 and "Traceback" not in err and "size mismatch" not in err
    assert err.startswith(f"error: {student}: student shapes do not match this run's model (")
    # the last layer's rows are the prototypes: 64 written, 32 asked for
    assert (
        "head.last_layer.parametrizations.weight.original1 [64, 16] in the file, [32, 16] in this run"
        in err
    )
    assert "model.head (out_dim" in err
    # nothing of the run changed: not its config, not its metrics, not a checkpoint
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == kept
    _all_load(out / "checkpoints")


class _RunsCommand:
    def __reduce__(self) -> tuple:
        return (os.system, ("true",))


CRAFTED = {
    "code": pickle.dumps(_RunsCommand()),  # a plain pickle that would run a command
    "empty": b"",
    "text": b"not a pickle at all\n" * 3,
}
REASONS = {
    "code": "not a tensor file in torch.save's zip format (a plain or old-format pickle, or "
    "other bytes; refusing to unpickle it)",
    "empty": "an empty file",
    "text": "not a tensor file in torch.save's zip format (a plain or old-format pickle, or "
    "other bytes; refusing to unpickle it)",
}


@pytest.mark.parametrize("kind", sorted(CRAFTED))
def test_a_crafted_random_states_file_is_one_clean_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    assert _pretrain(tmp_path, "max_steps=8") == 0
    out = tmp_path / "run"
    bad = out / "checkpoints" / "step_00000008"
    (bad / "random_states_0.pkl").write_bytes(CRAFTED[kind])
    _reseal(bad)
    capsys.readouterr()
    assert _pretrain(tmp_path, "--resume", str(bad), "max_steps=8") == 2
    err = capsys.readouterr().err
    assert (
        err == f"error: --resume {bad}: rejected {bad / 'random_states_0.pkl'}: {REASONS[kind]}\n"
    )
    assert "_use_new_zipfile_serialization" not in err and "weights_only" not in err
    assert find_resume_checkpoint(out, pickled=True) == out / "checkpoints" / "step_00000004"


def test_every_checkpoint_file_gets_the_mode_of_the_json_beside_it(
    tmp_path: Path, umask_027: None
) -> None:
    # safetensors' own writer creates 0600 files whatever the umask; a group could not read them
    assert _pretrain(tmp_path, "max_steps=4") == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000004"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in checkpoint.iterdir()}
    assert modes["backbone.json"] == 0o640  # 0666 less the umask 027, what open() gives
    assert {name for name, mode in modes.items() if mode != 0o640} == set(), modes
    assert {n for n in modes if n.endswith(".safetensors")} >= {
        "teacher.safetensors",
        "student_backbone.safetensors",
        "dino_state.safetensors",
    }


def test_the_fallback_line_of_knn_and_export_is_a_warning_line(tmp_path: Path) -> None:
    assert _pretrain(tmp_path, "max_steps=8") == 0
    out = tmp_path / "run"
    teacher = out / "checkpoints" / "step_00000008" / "teacher_backbone.safetensors"
    teacher.write_bytes(teacher.read_bytes()[:-8])  # a checksum mismatch: the newest is damaged
    exported = tmp_path / "extractor.safetensors"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unimix.cli",
            "export",
            str(out),
            "-o",
            str(exported),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "skipping checkpoint" in line]
    assert lines and all(
        line.startswith("warning: skipping checkpoint step_00000008") for line in lines
    )
    assert json.loads(Path(f"{exported}.json").read_text())["step"] == 4
