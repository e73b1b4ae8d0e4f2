"""Throughput in the logs (``img_per_s`` of metrics.jsonl and the progress bar) counts the time
spent in training steps only: an online k-NN (or a checkpoint) between steps does not lower it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_dino_train import _write_config

import unimix.ssl.engine.trainer as trainer
from unimix.ssl.pretrain_cli import main

KNN_SECONDS = 2.0


@pytest.mark.slow
def test_img_per_s_leaves_out_the_online_knn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_knn(*args: object, **kwargs: object) -> float:
        time.sleep(KNN_SECONDS)  # a k-NN that takes far longer than a tiny step (~0.05 s)
        return 50.0

    monkeypatch.setattr(trainer, "online_knn", slow_knn)
    out = tmp_path / "run"
    config = _write_config(tmp_path, logging={"every_steps": 2, "progress_bar": False})
    # 96 images, batch 16: 6 steps per epoch; k-NN every half epoch: after steps 3 and 6 (not
    # the last step), inside the logging windows of steps 4 and 8
    args = [
        "-c",
        str(config),
        "-o",
        str(out),
        "max_steps=8",
        "checkpoint.every_steps=0",
        "eval.knn_every_epochs=0.5",
    ]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "knn_top1" in r] == [3, 6]
    logged = [r for r in records if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 6, 8]
    # counted over the wall clock, a window holding a 2-s k-NN would be below 32 / 2 = 16 img/s
    batch_images = 2 * 16
    for r in logged:
        assert r["img_per_s"] > batch_images / KNN_SECONDS, r
