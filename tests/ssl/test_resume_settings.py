"""Resuming with another ``data.batch_size`` or ``seed`` (issue 25, item 3): the schedule used
to jump (0.75 -> 1.5 epochs) or the data order change without a word. ``trainer_state.json``
records both; a resume that changes either is refused before anything is written, in one line
naming the saved and the new value; the run is left byte for byte as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from run_snapshot import PRETRAIN, assert_run_intact, finished_run, run_cli, snapshot

from unimix.checkpoint import list_checkpoints
from unimix.ssl.pretrain_cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return finished_run(tmp_path_factory.mktemp("finished"))  # batch 16, seed 0


def _saved(run: Path, key: str) -> object:
    newest = list_checkpoints(run / "checkpoints")[-1]
    return json.loads((newest / "trainer_state.json").read_text())[key]


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["data.batch_size=32"], ["data.batch_size=16 (this run: data.batch_size=32)"]),
        (["seed=1"], ["seed=0 (this run: seed=1)"]),
        (
            ["data.batch_size=8", "seed=7"],
            ["data.batch_size=16 (this run: data.batch_size=8)", "seed=0 (this run: seed=7)"],
        ),
    ],
)
def test_resume_auto_with_other_batch_size_or_seed_is_refused(
    run: Path, capsys: pytest.CaptureFixture[str], overrides: list[str], needles: list[str]
) -> None:
    assert (_saved(run, "batch_size"), _saved(run, "seed")) == (16, 0)  # what the run recorded
    before = snapshot(run)
    code = main(["-c", str(run / "config.yaml"), "-o", str(run), "--resume", "auto", *overrides])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume auto: step_00000002 was written with ")
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    assert_run_intact(run, before)


def test_resume_from_a_checkpoint_dir_is_checked_too(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = list_checkpoints(run / "checkpoints")[0]
    before = snapshot(run)
    out = tmp_path / "elsewhere"
    code = main(["-c", str(run / "config.yaml"), "-o", str(out), "--resume", str(first), "seed=3"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: --resume {first}: step_00000001 was written with seed=0 (this run: seed=3); "
        "resuming with other values would not continue that run (schedules and data order "
        "change): set them back, or start a new run in another output_dir\n"
    )
    assert not out.exists()
    assert_run_intact(run, before)


@pytest.mark.slow
def test_resume_with_the_same_values_continues(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    done = run_cli(
        [
            *PRETRAIN[1:],
            "-c",
            str(copy / "config.yaml"),
            "-o",
            str(copy),
            "--resume",
            "auto",
            "max_steps=3",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout + done.stderr
    steps = [p.name for p in list_checkpoints(copy / "checkpoints")]
    assert steps == ["step_00000001", "step_00000002", "step_00000003"]
