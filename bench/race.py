"""A race on CIFAR-scale data: our recipe against the lightly peer at one budget, several seeds.

The budget is source images (``images``) or wall-clock minutes (``minutes``). Each seed's runs of
the two methods start together, one thread each, so a wall-clock budget is shared fairly
however fast the machine is that hour. Every checkpoint is evaluated like for like
(:func:`unimix.eval.compare_knn`) on the test set (bank = the training set) — or on held-out
training images with ``holdout`` — next to the floors: raw pixels and the backbone untrained.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .job import JobSpec, headline, untrained_floors
from .scheduler import run_jobs

__all__ = ["format_race", "race"]


def race(
    base: JobSpec,
    seeds: Sequence[int],
    *,
    peer: str | None = "lightly",
    peer_optimizers: Sequence[str] = ("sgd",),
    parallel: int = 2,
    lockstep: bool = False,
) -> dict[str, Any]:
    """Run ``base`` (method ``ours``) and the peer for every seed; returns the report (also
    written to ``<base.out>/race.json``)."""
    out = Path(base.out)
    specs: list[JobSpec] = []
    for seed in seeds:
        specs.append(replace(base, method="ours", seed=seed, out=str(out / "ours" / f"seed{seed}")))
        if peer == "lightly":
            for opt in peer_optimizers:
                name = "lightly" if opt == "sgd" else f"lightly_{opt}"
                specs.append(
                    replace(
                        base,
                        method="lightly",
                        seed=seed,
                        peer_optimizer=opt,
                        out=str(out / name / f"seed{seed}"),
                        overrides=[],
                    )
                )
    results = run_jobs(specs, parallel=parallel, lockstep=lockstep)
    floors_file = out / "floors.json"
    if floors_file.is_file():
        floors = json.loads(floors_file.read_text())
    else:
        first = results[0]
        floors = {
            "ours": untrained_floors(base, first["mean"], first["std"]),
        }
        if peer == "lightly":
            peer_result = next(r for r in results if r["spec"]["method"] == "lightly")
            floors["lightly"] = untrained_floors(base, peer_result["mean"], peer_result["std"])
        floors_file.write_text(json.dumps(floors, indent=1))
    methods: dict[str, list[dict[str, Any]]] = {}
    for spec, result in zip(specs, results, strict=True):
        methods.setdefault(Path(spec.out).parent.name, []).append(result)
    report = {
        "spec": {**base.__dict__, "seeds": list(seeds)},
        "evaluation": results[0]["evaluation"],
        "floors": floors,
        "methods": {name: _summary(rs) for name, rs in methods.items()},
    }
    (out / "race.json").write_text(json.dumps(report, indent=1))
    return report


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    runs = []
    for r in results:
        last = r["curve"][-1]
        runs.append(
            {
                "seed": r["spec"]["seed"],
                "images_seen": last["images_seen"],
                "train_minutes": r["train_minutes"],
                "img_per_s": r["img_per_s"],
                "teacher@20": headline(last["rows"]),
                "student@20": headline(last["rows"], "student"),
                "teacher@200": headline(last["rows"], k=200),
                "curve": [
                    {"images_seen": p["images_seen"], "teacher@20": headline(p["rows"])}
                    for p in r["curve"]
                ],
            }
        )
    mean = {
        key: statistics.fmean(run[key] for run in runs)
        for key in ("teacher@20", "student@20", "teacher@200", "images_seen", "train_minutes")
    }
    return {"runs": runs, "mean": mean}


def format_race(report: dict[str, Any]) -> str:
    """The race as a Markdown table: floors, then every run and each method's mean."""
    lines = [
        "| method | seed | images | train min | teacher k-NN@20 | student @20 | teacher @200 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for method, rows in report["floors"].items():
        for row in rows:
            label = f"{row['network']} ({method} normalisation, BN {row['bn']})"
            lines.append(
                f"| {label} | | | | {row.get('top1@20', float('nan')):.2f} | | "
                f"{row.get('top1@200', float('nan')):.2f} |"
            )
    for method, summary in report["methods"].items():
        for run in summary["runs"]:
            lines.append(
                f"| {method} | {run['seed']} | {run['images_seen']:,} | {run['train_minutes']:.1f} | "
                f"{run['teacher@20']:.2f} | {run['student@20']:.2f} | {run['teacher@200']:.2f} |"
            )
        m = summary["mean"]
        lines.append(
            f"| **{method} mean** | | {m['images_seen']:,.0f} | {m['train_minutes']:.1f} | "
            f"**{m['teacher@20']:.2f}** | {m['student@20']:.2f} | {m['teacher@200']:.2f} |"
        )
    return "\n".join(lines)
