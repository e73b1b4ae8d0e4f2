"""Where ``unimix knn`` / ``unimix linear`` write their reports (issue 27 item 1): by default into
the run's ``eval/`` folder (or beside an exported file), named after the network, its step, the
data and the split; never into the working directory, never over a run's own files, even when
run from inside the run (``cd RUN && unimix knn .``); ``--help`` says where."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from test_eval_features import _fake_checkpoint

from unimix.cli import main as unimix_main
from unimix.eval.knn_cli import main as main_knn
from unimix.eval.linear_cli import main as main_linear

DATA = [
    "--data",
    "synthetic",
    "--limit-train",
    "40",
    "--limit-test",
    "12",
    "--device",
    "cpu",
    "--workers",
    "0",
    "--no-progress",
]
RUN_FILES = {  # what a finished run holds besides checkpoints (contents do not matter here)
    "config.yaml": "data: {dataset: synthetic}\n",
    "metrics.jsonl": '{"step": 7, "loss": 1.0}\n',
    "knn.json": '{"trained": 38.7, "student": 41.6, "k": 20}\n',
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    _fake_checkpoint(run)
    for name, text in RUN_FILES.items():
        (run / name).write_text(text)
    return run


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` but ``eval/``, with the hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "eval" not in p.relative_to(folder).parts
    }


def test_knn_and_linear_from_inside_the_run_leave_its_files_alone(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(run)
    monkeypatch.chdir(run)  # cd RUN && unimix knn .
    assert main_knn([".", *DATA, "--k", "5"]) == 0
    assert main_knn([".", *DATA, "--k", "5", "--which", "student"]) == 0
    probe = ["--epochs", "2", "--lrs", "0.1", "--limit-train", "200"]  # 10 classes to split
    assert main_linear([".", *DATA, *probe]) == 0
    assert _digest(run) == before  # knn.json, config.yaml, metrics.jsonl, checkpoints: unchanged
    written = sorted(p.name for p in (run / "eval").iterdir())
    assert written == [
        "knn-student-step7-synthetic-test.json",
        "knn-teacher-step7-synthetic-test.json",
        "linear-teacher-step7-synthetic-test.json",
    ]
    said = capsys.readouterr().out
    assert "wrote eval/knn-teacher-step7-synthetic-test.json" in said
    report = json.loads((run / "eval" / written[0]).read_text())
    assert report["which"] == "student" and report["step"] == 7 and report["command"] == "knn"
    # the same defaults from elsewhere (a checkpoint dir of the run, a weights file of it)
    monkeypatch.chdir(run.parent)
    ckpt = run / "checkpoints" / "step_00000007"
    assert main_knn([str(ckpt / "student_backbone.safetensors"), *DATA, "--k", "3"]) == 0
    assert list(json.loads((run / "eval" / written[0]).read_text())["top1"]) == ["3"]  # same net
    assert not list(run.parent.glob("*.json"))  # nothing in the working directory


def test_out_never_replaces_a_runs_own_file(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _digest(run)
    for target in ("knn.json", "config.yaml", "checkpoints/step_00000007/report.json"):
        assert main_knn([str(run), *DATA, "--k", "5", "--out", str(run / target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --out {run / target}: would")
    assert main_linear([str(run), *DATA, "--out", str(run / "metrics.jsonl")]) == 2
    assert _digest(run) == before and not (run / "eval").exists()
    # an explicit path anywhere else is taken as given
    assert main_knn([str(run), *DATA, "--k", "5", "--out", str(run / "mine.json")]) == 0


def test_an_exported_file_gets_its_reports_beside_it(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exported = tmp_path / "exports" / "extractor.safetensors"
    assert unimix_main(["export", str(run), "-o", str(exported)]) == 0
    assert main_knn([str(exported), *DATA, "--k", "5"]) == 0
    report = tmp_path / "exports" / "eval" / "knn-extractor.safetensors-synthetic-test.json"
    assert json.loads(report.read_text())["bank"] == 40
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("command", ["knn", "linear"])
def test_help_says_where_the_report_goes(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        unimix_main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"RUN/eval/{command}-<which>-step<N>-<data>-<split>.json" in text
    assert "never a run's own files" in text
