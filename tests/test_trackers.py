"""``logging.trackers``: TensorBoard through Accelerate writes event files that TensorBoard's own
reader gives back; a tracker that is not installed or unknown is one line and exit 2 before
anything is built; a run without extra trackers says nothing about trackers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from test_dino_train import PRETRAIN, _metrics, _run, _write_config

from unimix.ssl.cli import main
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.trackers import flat_config

STEPS = ["max_steps=3", "checkpoint.every_steps=0"]


def _default_logging(tmp_path: Path, **top: object) -> Path:
    """The tiny run's config with the logging section as a user writes it (no tracker keys)."""
    return _write_config(tmp_path, logging={"every_steps": 1, "progress_bar": False}, **top)


def test_tensorboard_tracker_writes_the_logged_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    config = _default_logging(tmp_path)
    args = ["-c", str(config), "-o", str(out), "checkpoint.every_steps=0"]
    args += ["logging.trackers=[tensorboard]"]
    assert main([*args, "max_steps=2"]) == 0
    # resumed from step 2: TensorBoard keeps steps 1-2 once each, as metrics.jsonl does
    assert main([*args, "max_steps=3", "--resume", "auto"]) == 0
    run_dir = out / "tensorboard" / "unimix"  # <output_dir>/tensorboard/<logging.project>
    assert list(run_dir.glob("events.out.tfevents.*")), sorted(out.rglob("*"))
    scalars = EventAccumulator(str(run_dir)).Reload()
    logged = [r for r in _metrics(out) if "loss" in r]  # JSONL is written as well
    assert len(logged) == 3
    for key in ("loss", "lr", "momentum", "teacher_entropy", "teacher_mean_entropy"):
        points = scalars.Scalars(key)
        assert [p.step for p in points] == [r["step"] for r in logged] == [1, 2, 3]
        assert [p.value for p in points] == pytest.approx([r[key] for r in logged], rel=1e-6)


def test_a_missing_tracker_is_one_line_and_exit_2_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an absent package looks like
    out = tmp_path / "run"
    config = _default_logging(tmp_path)
    assert main(["-c", str(config), "-o", str(out), *STEPS, "logging.trackers=[tensorboard]"]) == 2
    err = capsys.readouterr().err
    assert err == (
        'error: logging.trackers: tensorboard is not installed (pip install "unimix[tensorboard]")\n'
    )
    assert not out.exists()  # nothing was built
    if importlib.util.find_spec("wandb") is None:
        assert main(["-c", str(config), "-o", str(out), "logging.trackers=[jsonl,wandb]"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "wandb is not installed (pip install wandb)" in err


def test_an_unknown_tracker_lists_the_accepted_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", "quickstart", "logging.trackers=[jsonl,tb]"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "'tb'" in err
    for name in ("jsonl", "tensorboard", "wandb", "mlflow"):
        assert repr(name) in err


@pytest.mark.slow
def test_the_default_run_says_nothing_about_trackers(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _run([sys.executable, *PRETRAIN, "-c", str(_default_logging(tmp_path)), "-o", str(out)]
                + STEPS)  # fmt: skip
    said = (proc.stdout + proc.stderr).lower()
    assert "unimix pretrain" in said  # the run did speak
    assert "tensorboard" not in said and "tracker" not in said, said
    assert len([r for r in _metrics(out) if "loss" in r]) == 3
    assert not (out / "tensorboard").exists()


def test_tracker_config_and_the_deprecated_tensorboard_key() -> None:
    assert load_pretrain_config("quickstart").logging.trackers == ["jsonl"]
    cfg = load_pretrain_config("quickstart", ["logging.tensorboard=true"])
    assert cfg.logging.trackers == ["jsonl", "tensorboard"]
    cfg = load_pretrain_config("quickstart", ["logging.tensorboard=false"])
    assert cfg.logging.trackers == ["jsonl"]
    flat = flat_config(cfg)
    assert flat["optim.base_lr"] == cfg.optim.base_lr
    assert flat["model.head.out_dim"] == cfg.model.head.out_dim
    assert flat["data.mean"] == str(list(cfg.data.mean))
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
