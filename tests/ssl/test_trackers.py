"""``logging.trackers``: TensorBoard through Accelerate writes event files that TensorBoard's own
reader gives back, the final k-NN included (and W&B's offline summary, MLflow's store, when
installed: each inside the output dir, nothing in the working directory); a tracker that is not
installed or unknown is one line and exit 2 before anything is built; a run without extra
trackers says nothing about trackers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_dino_train import PRETRAIN, _metrics, _run, _write_config

from unimix.config import ConfigError
from unimix.ssl.config import load_pretrain_config
from unimix.ssl.engine.trackers import flat_config
from unimix.ssl.pretrain_cli import main

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
    proc = _run(
        [sys.executable, *PRETRAIN, "-c", str(_default_logging(tmp_path)), "-o", str(out)] + STEPS
    )
    said = (proc.stdout + proc.stderr).lower()
    assert "unimix pretrain" in said  # the run did speak
    assert "tensorboard" not in said and "tracker" not in said, said
    assert len([r for r in _metrics(out) if "loss" in r]) == 3
    assert not (out / "tensorboard").exists()


def test_tracker_config_and_no_tensorboard_key() -> None:
    cfg = load_pretrain_config("quickstart")
    assert cfg.logging.trackers == ["jsonl"]
    # the old boolean is gone (0.x): an unknown key, one line naming it
    with pytest.raises(ConfigError, match=r"logging\.tensorboard"):
        load_pretrain_config("quickstart", ["logging.tensorboard=true"])
    flat = flat_config(cfg)
    assert flat["optim.base_lr"] == cfg.optim.base_lr
    assert flat["model.head.out_dim"] == cfg.model.head.out_dim
    assert flat["data.mean"] == str(list(cfg.data.mean))
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())


# ------------------------------------------------------------------ the final k-NN, the stores
KNN_AT_END = ["eval.knn_at_end=true", "eval.num_train=32", "eval.num_test=16", "eval.k=5"]
FINAL = {
    "final_knn_top1_teacher": "trained",
    "final_knn_top1_student": "student",
    "final_knn_top1_untrained": "untrained",
}


def test_the_final_knn_reaches_tensorboard(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    args = ["-c", str(_default_logging(tmp_path)), "-o", str(out), *STEPS, *KNN_AT_END]
    assert main([*args, "logging.trackers=[tensorboard]"]) == 0
    knn = json.loads((out / "knn.json").read_text())
    scalars = EventAccumulator(str(out / "tensorboard" / "unimix")).Reload()
    for tag, key in FINAL.items():
        (point,) = scalars.Scalars(tag)
        assert point.step == 3 == knn["step"]
        assert point.value == pytest.approx(knn[key], rel=1e-6)
    # metrics.jsonl holds the same record (what `unimix plot` and W&B's summary read)
    (record,) = [r for r in _metrics(out) if "final_knn_top1_teacher" in r]
    assert record["step"] == 3 and record["final_knn_top1_student"] == knn["student"]


def _pretrain_process(tmp_path: Path, out: Path, tracker: str, env: dict[str, str]) -> Path:
    """A tiny run with ``tracker`` in a fresh process whose working directory is ``cwd``."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    config = _default_logging(tmp_path)
    args = [sys.executable, *PRETRAIN, "-c", str(config), "-o", str(out), *STEPS, *KNN_AT_END]
    proc = subprocess.run(
        [*args, f"logging.trackers=[{tracker}]"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


def _wandb_summary(path: Path) -> dict[str, object]:
    """The last summary of an offline W&B run file (``run-*.wandb``: W&B's 7-byte header, then
    LevelDB's log format, 32 KiB blocks of ``crc(4) length(2) type(1) payload`` chunks, each
    record a ``wandb_internal_pb2.Record``); wandb >= 0.19 writes no wandb-summary.json offline."""
    from wandb.proto import wandb_internal_pb2

    data, summary = path.read_bytes(), {}
    assert data[:4] == b":W&B"
    pos, chunks = 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        kind = data[pos + 6] if left >= 7 else 0
        if kind == 0:  # block trailer padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            if record.WhichOneof("record_type") == "summary":
                for item in record.summary.update:
                    summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return summary


@pytest.mark.slow
def test_wandb_offline_summary_has_the_final_knn(tmp_path: Path) -> None:
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    cwd = _pretrain_process(
        tmp_path, out, "wandb", {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    )
    assert not list(cwd.iterdir())  # nothing in the working directory
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    summary = _wandb_summary(run_file)
    knn = json.loads((out / "knn.json").read_text())
    assert summary["_step"] == 3
    for tag, key in FINAL.items():
        assert summary[tag] == pytest.approx(knn[key], rel=1e-6)


@pytest.mark.slow
def test_mlflow_keeps_its_store_in_the_output_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with mlflow or mlflow-skinny (which has no database backend): whichever is installed
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "run"
    cwd = _pretrain_process(tmp_path, out, "mlflow", {})
    assert not list(cwd.iterdir())  # MLflow 3's default would be ./mlflow.db here
    store = out / "mlruns"
    if (store / "mlflow.db").is_file():
        uri = f"sqlite:///{store / 'mlflow.db'}"
    else:
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        uri = store.as_uri()
    client = MlflowClient(tracking_uri=uri)
    (experiment,) = client.search_experiments()
    (logged,) = client.search_runs([experiment.experiment_id])
    assert experiment.name == "unimix" and logged.info.run_name == "run"
    knn = json.loads((out / "knn.json").read_text())
    for tag, key in FINAL.items():
        assert logged.data.metrics[tag] == pytest.approx(knn[key], rel=1e-6)
    assert logged.data.metrics["loss"] == [r for r in _metrics(out) if "loss" in r][-1]["loss"]
