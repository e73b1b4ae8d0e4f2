"""unimix.bench: budgeted jobs fit their warm-ups, the search ranks by the mean over seeds, and a
tiny race of our recipe against the lightly peer runs end to end with like-for-like numbers."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from unimix.bench import JobSpec, format_table, summarize
from unimix.bench.job import _capped_warmups
from unimix.ssl.config import load_pretrain_config


def test_warmups_capped_at_share_of_budget_unless_given() -> None:
    # cifar10_nano warms the lr up for 2 epochs and freezes the last layer for 1; a 3-epoch
    # budget with share 0.1 allows 0.3 epochs of each. The teacher temperature warm-up (0 in the
    # recipe) is already within the cap and must not be touched; a key given explicitly is kept.
    cfg = load_pretrain_config("cifar10_nano", [])
    assert (cfg.optim.warmup_epochs, cfg.dino.freeze_last_layer_epochs) == (2, 1)
    spec = JobSpec(
        "ours",
        "x",
        "cifar10",
        "poolformer_nano",
        warmup_share=0.1,
        overrides=["dino.freeze_last_layer_epochs=2"],
    )
    assert _capped_warmups(cfg, spec, epochs=3.0) == ["optim.warmup_epochs=0.300000"]


def _result(seed: int, teacher: float, student: float) -> dict:
    rows = [
        {"network": "teacher", "bn": "kept", "top1@20": 0.0, "top1@200": 0.0},
        {"network": "teacher", "bn": "recalibrated", "top1@20": teacher, "top1@200": teacher - 1},
        {"network": "student", "bn": "recalibrated", "top1@20": student, "top1@200": 0.0},
    ]
    return {"spec": {"seed": seed}, "curve": [{"rows": rows}], "img_per_s": 10.0}


def test_search_ranks_by_the_mean_over_seeds_of_the_recalibrated_teacher() -> None:
    grid = {"configs": {"a": ["x=1"], "b": []}}
    rows = summarize(
        {"a": [_result(0, 40.0, 1.0), _result(1, 44.0, 3.0)], "b": [_result(0, 45.0, 0.0)]},
        grid,
    )
    assert [r["config"] for r in rows] == ["b", "a"]
    a = rows[1]
    assert a["teacher@20"] == 42.0 and a["student@20"] == 2.0 and a["teacher@200"] == 41.0
    assert a["teacher@20_sd"] == pytest.approx(statistics.stdev([40.0, 44.0]))
    assert rows[0]["teacher@20_sd"] == 0.0
    table = format_table(rows)
    assert "| 1 | `b` | 45.00 ± 0.00 |" in table and "40.00 / 44.00" in table


@pytest.mark.slow
def test_tiny_race_of_ours_against_the_lightly_peer(tmp_path: Path) -> None:
    from unimix.bench.race import format_race, race

    base = JobSpec(
        method="ours",
        out=str(tmp_path / "race"),
        data="synthetic",
        backbone="poolformer_nano",
        images=256,
        holdout=100,
        points=2,
        bank_limit=300,
        bn_images=64,
        overrides=[
            "data.batch_size=64",
            "augment.num_local=0",
            "data.num_workers=0",
            "model.head.out_dim=64",
            "model.head.hidden_dim=32",
            "model.head.bottleneck_dim=16",
        ],
    )
    report = race(base, seeds=[0], peer="lightly", parallel=2)
    ours, peer = report["methods"]["ours"]["runs"][0], report["methods"]["lightly"]["runs"][0]
    assert ours["images_seen"] == 256 and peer["images_seen"] == 256  # the same budget
    assert "100 held-out training images" in report["evaluation"]
    result = json.loads((tmp_path / "race" / "lightly" / "seed0" / "result.json").read_text())
    assert result["mean"] == [0.485, 0.456, 0.406]  # the peer is evaluated as it trained
    assert [r["network"] for r in report["floors"]["ours"]] == ["raw_pixels", "untrained"]
    assert "| **lightly mean** |" in format_race(report)
    again = race(base, seeds=[0], peer="lightly")  # finished jobs are read back, not re-run
    assert again["methods"] == report["methods"]


def test_knn_speed_reports_exact_approximate_and_memory(tmp_path: Path) -> None:
    from unimix.bench.knn_speed import (
        EXACT,
        format_knn_speed,
        knn_speed,
        sphere_mixture,
        write_bank,
    )

    store = write_bank(tmp_path / "bank", n=900, dim=16, classes=6, spread=1.0, chunk=200)
    x, y = store.rows(0, 900), store.labels()
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5) and set(y.tolist()) == set(range(6))
    queries, labels = sphere_mixture(60, 16, 6, 1.0, seed=0, part=0)
    methods = {"ivf": {"index": "ivf", "nlist": 6, "nprobe": 6}, "torch": {"backend": "torch"}}
    report = knn_speed(store, queries, labels, methods, k=10)
    rows = report["methods"]
    assert rows[EXACT]["agreement_with_exact"] == 1.0
    assert rows["ivf"]["agreement_with_exact"] == 1.0  # every cell searched: exact again
    assert rows["torch"]["agreement_with_exact"] == 1.0 and rows["ivf"]["build_seconds"] > 0
    assert rows[EXACT]["peak_rss_bytes"] > 0 and report["bank_bytes"] == 900 * 16 * 4
    assert EXACT in format_knn_speed(report)


SCRIPTS = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_is_a_command_line_with_help(script: str) -> None:
    """Each script runs as a program (never imported by path) and its imports resolve."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, str(root / "scripts" / script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:"), result.stdout[:200]


def test_throughput_races_both_loops_at_one_precision_with_views_where_asked(
    tmp_path: Path,
) -> None:
    from unimix.bench.throughput import ThroughputSpec, format_throughput, measure

    spec = ThroughputSpec(
        num_samples=64,
        batch_size=8,
        global_size=32,
        local_size=16,
        num_local=2,
        out_dim=32,
        hidden_dim=16,
        bottleneck_dim=8,
        steps=1,
        warmup=1,
        rounds=1,
        num_workers=0,
        threads=1,
        precision="bf16",
        placement="device",
        out=str(tmp_path / "t.json"),
    )
    report = measure(spec)
    assert report["precision"] == "bf16" and report["views_rendered_on"] == "cpu"
    assert set(report["img_per_s"]) == {"unimix", "lightly"}
    assert all(rate > 0 for rate in report["img_per_s"].values())
    assert "bf16" in format_throughput(report).splitlines()[0]
    with pytest.raises(ValueError, match="precision"):
        measure(ThroughputSpec(precision="fp16"))


def test_speed_matrix_parses_variants_and_times_each() -> None:
    from unimix.bench.speed import format_speed, measure_speed, parse_variant
    from unimix.bench.throughput import ThroughputSpec

    assert parse_variant("x: placement=device, batch_size=32, compile=") == (
        "x",
        {"placement": "device", "batch_size": 32, "compile": ""},
    )
    for bad, message in (
        ("nameless", "expected"),
        ("x: nope=1", "unknown field 'nope'"),
        ("x: batch_size=big", "not a int"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_variant(bad)
    base = ThroughputSpec(
        num_samples=32,
        batch_size=8,
        num_local=1,
        out_dim=32,
        hidden_dim=16,
        bottleneck_dim=8,
        steps=1,
        warmup=1,
        num_workers=0,
        threads=1,
    )
    report = measure_speed(base, ["w: placement=loader", "d: placement=device"])
    assert [r["name"] for r in report["rows"]] == ["w", "d"]
    assert all(r["img_per_s"] > 0 and r["views_rendered_on"] == "cpu" for r in report["rows"])
    assert format_speed(report).count("\n") == 3


def test_carry_packs_and_unpacks_a_tree_byte_for_byte(tmp_path: Path) -> None:
    import gzip

    from unimix.bench.carry import pack, unpack

    src = tmp_path / "src"
    files = {"train/cat/0.jpg": b"\xff\xd8a", "train/dog/1.jpg": b"bb", "test/cat/2.jpg": b""}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    assert pack(src, tmp_path / "packed") == 3
    assert unpack(tmp_path / "packed", tmp_path / "out") == 3
    for rel, data in files.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "images.bin").write_bytes(b"x")
    with gzip.open(evil / "index.json.gz", "wt") as f:
        json.dump([["../escaped.txt", 0, 1]], f)
    with pytest.raises(ValueError, match="outside the target folder"):
        unpack(evil, tmp_path / "target")
    assert not (tmp_path / "escaped.txt").exists()
