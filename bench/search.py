"""Recipe search under a budget of source images, chosen on a validation split.

A grid (YAML, :func:`load_grid`; its format is in docs/benchmarks.md) names configurations —
each a list of ``unimix pretrain`` overrides on top of a recipe and the grid's shared ``base`` —
and every configuration runs for the same number of source images, on ≥ 2 seeds, with a
validation k-NN: bank = training images, queries = a fixed set held out of the training set
(:func:`unimix.data.split_holdout`); the test set is not read. The table ranks configurations
by the mean over seeds of the teacher's like-for-like k-NN top-1 (k = 20). Finished runs are
kept, so a grid can grow and an interrupted search resumes.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ..eval import is_like_for_like
from .job import JobSpec, headline, untrained_floors
from .scheduler import run_jobs

__all__ = ["load_grid", "search", "summarize"]


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read and check a grid file (see the module docstring)."""
    path = Path(path)
    try:
        grid = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"grid {path}: cannot read ({err})") from None
    if not isinstance(grid, dict) or not isinstance(grid.get("configs"), dict):
        raise ValueError(f"grid {path}: expected a mapping with a 'configs' mapping")
    for name, overrides in grid["configs"].items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ValueError(f"grid {path}: configs.{name} must be a list of KEY=VALUE strings")
    grid.setdefault("recipe", "cifar10_nano")
    grid.setdefault("base", [])
    if "backbone" not in grid:
        raise ValueError(f"grid {path}: 'backbone' missing")
    return grid


def search(
    grid: dict[str, Any],
    *,
    data: str,
    images: int,
    seeds: Sequence[int],
    holdout: int,
    out: str | Path,
    bank_limit: int | None = None,
    parallel: int = 2,
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every configuration (or ``only`` those) × seed; returns the report written to
    ``<out>/search.json``: :func:`summarize`'s rows, the floors and the evaluation."""
    out = Path(out)
    names = [n for n in grid["configs"] if only is None or n in only]
    unknown = sorted(set(only or ()) - set(grid["configs"]))
    if unknown:
        raise ValueError(f"unknown configurations: {', '.join(unknown)}")
    specs = [
        JobSpec(
            method="ours",
            out=str(out / name / f"seed{seed}"),
            data=data,
            backbone=grid["backbone"],
            seed=seed,
            images=images,
            recipe=grid["recipe"],
            overrides=[*grid["base"], *grid["configs"][name]],
            holdout=holdout,
            bank_limit=bank_limit,
        )
        for name in names
        for seed in seeds
    ]
    results = run_jobs(specs, parallel=parallel)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for spec, result in zip(specs, results, strict=True):
        by_name.setdefault(Path(spec.out).parent.name, []).append(result)
    rows = summarize(by_name, grid)
    floors_file = out / "floors.json"
    if not floors_file.is_file():  # raw pixels and the backbone untrained, same evaluation
        first = results[0]
        floors_file.write_text(
            json.dumps(untrained_floors(specs[0], first["mean"], first["std"]), indent=1)
        )
    floors = json.loads(floors_file.read_text())
    report = {
        "grid": grid,
        "images": images,
        "seeds": list(seeds),
        "evaluation": results[0]["evaluation"],
        "floors": floors,
        "rows": rows,
    }
    (out / "search.json").write_text(json.dumps(report, indent=1))
    return report


def summarize(
    by_name: dict[str, list[dict[str, Any]]], grid: dict[str, Any]
) -> list[dict[str, Any]]:
    """One row per configuration, best first: mean and spread over seeds of the last point."""

    def stats(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    rows = []
    for name, results in by_name.items():
        last = [r["curve"][-1]["rows"] for r in results]
        teacher = [headline(rows) for rows in last]
        student = [headline(rows, "student") for rows in last]
        teacher200 = [headline(rows, k=200) for rows in last]
        mean, sd = stats(teacher)
        rows.append(
            {
                "config": name,
                "overrides": grid["configs"][name],
                "seeds": [r["spec"]["seed"] for r in results],
                "teacher@20": mean,
                "teacher@20_sd": sd,
                "teacher@20_per_seed": teacher,
                "student@20": stats(student)[0],
                "teacher@200": stats(teacher200)[0],
                "img_per_s": stats([r["img_per_s"] for r in results])[0],
            }
        )
    rows.sort(key=lambda r: -r["teacher@20"])
    return rows


def format_table(rows: list[dict[str, Any]], floors: list[dict[str, Any]] = ()) -> str:
    """The search table as Markdown (floors first, when given)."""
    lines = [
        "| rank | config | teacher k-NN@20 (mean ± sd) | per seed | student @20 | teacher @200 | img/s |",
        "|---:|---|---:|---|---:|---:|---:|",
    ]
    for row in floors:
        if is_like_for_like(row):
            lines.append(
                f"| floor | {row['network']} | {row['top1@20']:.2f} | | | "
                f"{row.get('top1@200', float('nan')):.2f} | |"
            )
    for i, r in enumerate(rows, 1):
        seeds = " / ".join(f"{v:.2f}" for v in r["teacher@20_per_seed"])
        lines.append(
            f"| {i} | `{r['config']}` | {r['teacher@20']:.2f} ± {r['teacher@20_sd']:.2f} | "
            f"{seeds} | {r['student@20']:.2f} | {r['teacher@200']:.2f} | {r['img_per_s']:.1f} |"
        )
    return "\n".join(lines)
