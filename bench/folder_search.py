"""Search and finalist runs of the data-sized ``folder`` recipe on several image folders.

Every run is the command a user types — ``unimix pretrain -c folder data.dataset=SET ...`` plus
the configuration's overrides — so the sizing is part of what is measured. On the validation
split (``holdout > 0``) a run trains on the set's train/ minus ``holdout`` fixed held-out
images and its final k-NN uses those as queries (bank: the rest); the test split is not read.
With ``holdout=0`` (finalists) the k-NN is the set's train/ against its test/. Each run's
``knn.json`` holds the trained teacher and student, the same backbone untrained and raw
pixels, so every row carries its own floors.

Runs go ``parallel`` at a time, each in its own process (one thread each by default); a run
whose ``knn.json`` exists is read, not re-run, and an interrupted one continues from its
output folder (``--resume auto``), so a search grows and resumes. The grid file
(``bench/grids/folder.yaml``: recipe, holdout, base, sets, configs) is in docs/benchmarks.md.
"""

from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "FolderRun",
    "format_rows",
    "load_folder_grid",
    "plan_runs",
    "run_all",
    "sized_epochs",
    "summarize_runs",
]


@dataclass(frozen=True)
class FolderRun:
    """One ``unimix pretrain`` run of the grid."""

    set: str
    config: str
    seed: int
    out: Path
    command: tuple[str, ...] = field(compare=False)

    @property
    def done(self) -> bool:
        return (self.out / "knn.json").is_file()


def load_folder_grid(path: str | Path) -> dict[str, Any]:
    """Read and check a grid file (see the module docstring); every config becomes
    ``{"sets": [...], "overrides": [...]}``."""
    path = Path(path)
    try:
        grid = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"grid {path}: cannot read ({err})") from None
    if not isinstance(grid, dict) or not isinstance(grid.get("configs"), dict):
        raise ValueError(f"grid {path}: expected a mapping with a 'configs' mapping")
    sets = grid.get("sets")
    if not isinstance(sets, list) or not sets or not all(isinstance(s, str) for s in sets):
        raise ValueError(f"grid {path}: 'sets' must be a non-empty list of folder names")
    configs = {}
    for name, value in grid["configs"].items():
        if isinstance(value, list):
            value = {"sets": list(sets), "overrides": value}
        if not isinstance(value, dict) or not isinstance(value.get("overrides", []), list):
            raise ValueError(f"grid {path}: configs.{name}: a list of overrides or a mapping")
        unknown = sorted(set(value.get("sets", sets)) - set(sets))
        if unknown:
            raise ValueError(f"grid {path}: configs.{name}: sets {unknown} not in 'sets'")
        overrides = value.get("overrides", [])
        if not all(isinstance(o, str) and "=" in o for o in overrides):
            raise ValueError(f"grid {path}: configs.{name}: overrides must be KEY=VALUE strings")
        configs[name] = {"sets": list(value.get("sets", sets)), "overrides": list(overrides)}
    grid["configs"] = configs
    grid.setdefault("recipe", "folder")
    grid.setdefault("base", [])
    grid.setdefault("holdout", 0)
    return grid


def plan_runs(
    grid: dict[str, Any],
    *,
    root: str | Path,
    out: str | Path,
    seeds: Sequence[int],
    holdout: int | None = None,
    only: Sequence[str] | None = None,
    epochs_factor: float | None = None,
) -> list[FolderRun]:
    """Every (set, config, seed) of the grid (``only``: those configs), with its command line;
    ``holdout`` (default: the grid's) 0 reads each set's test split; ``epochs_factor``: each
    run's epochs are the ones its sizing chooses times this (``epochs=`` added last)."""
    holdout = grid["holdout"] if holdout is None else holdout
    unknown = sorted(set(only or ()) - set(grid["configs"]))
    if unknown:
        raise ValueError(f"unknown configurations: {', '.join(unknown)}")
    runs = []
    for name, config in grid["configs"].items():
        if only is not None and name not in only:
            continue
        for set_name in config["sets"]:
            data = [f"data.dataset={Path(root) / set_name}", f"data.holdout={holdout}"]
            overrides = [*data, *grid["base"], *config["overrides"]]
            if epochs_factor is not None:
                epochs = sized_epochs(grid["recipe"], overrides) * epochs_factor
                overrides.append(f"epochs={epochs:g}")
            for seed in seeds:
                run_out = Path(out) / set_name / name / f"seed{seed}"
                command = (
                    sys.executable,
                    "-m",
                    "unimix.cli",
                    "pretrain",
                    "-c",
                    grid["recipe"],
                    f"seed={seed}",
                    "logging.progress_bar=false",
                    *overrides,
                    f"output_dir={run_out}",
                    "--resume",
                    "auto",
                )
                runs.append(FolderRun(set_name, name, seed, run_out, command))
    return runs


def sized_epochs(recipe: str, overrides: Sequence[str]) -> float:
    """The epochs ``unimix pretrain -c recipe overrides`` runs (the sizing's choice unless the
    overrides set them), without printing the sizing block."""
    from ..config import load_config
    from ..ssl.config import RECIPES, PretrainConfig
    from ..ssl.folder_recipe import size_from_data

    cfg = load_config(PretrainConfig, recipe, overrides, presets=RECIPES)
    return size_from_data(cfg, recipe, overrides, presets=RECIPES, stream=io.StringIO()).epochs


def run_all(runs: Sequence[FolderRun], parallel: int = 2) -> None:
    """Run every unfinished run, ``parallel`` at a time (output in ``<out>/job.log``).

    Raises:
        RuntimeError: a run failed (naming its log).
    """
    pending = [r for r in runs if not r.done]
    print(f"{len(runs)} runs, {len(runs) - len(pending)} already done, {parallel} at a time")
    running: list[tuple[FolderRun, subprocess.Popen, float]] = []
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < parallel:
            run = pending.pop(0)
            run.out.mkdir(parents=True, exist_ok=True)
            log = open(run.out / "job.log", "a")  # noqa: SIM115 (the child owns it)
            proc = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT)
            running.append((run, proc, time.perf_counter()))
            print(f"  start {run.out}", flush=True)
        time.sleep(2)
        for item in list(running):
            run, proc, started = item
            if proc.poll() is None:
                continue
            running.remove(item)
            minutes = (time.perf_counter() - started) / 60
            if proc.returncode or not run.done:
                failed.append(f"{run.out} (exit {proc.returncode}, see {run.out}/job.log)")
                print(f"  FAILED {failed[-1]}", flush=True)
            else:
                knn = json.loads((run.out / "knn.json").read_text())
                print(
                    f"  done  {run.out} in {minutes:.1f} min: teacher {knn['trained']:.2f}, "
                    f"untrained {knn['untrained']:.2f}, raw {knn['raw_pixels']:.2f}",
                    flush=True,
                )
    if failed:
        raise RuntimeError("runs failed: " + "; ".join(failed))


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


def summarize_runs(runs: Sequence[FolderRun]) -> list[dict[str, Any]]:
    """One row per (set, config) over its finished seeds: means of the teacher, student,
    untrained and raw pixels, the teacher per seed, the margins; best teacher first per set."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        if run.done:
            knn = json.loads((run.out / "knn.json").read_text())
            groups.setdefault((run.set, run.config), []).append({"seed": run.seed, **knn})
    rows = []
    for (set_name, config), found in groups.items():
        teacher = [r["trained"] for r in found]
        untrained = [r["untrained"] for r in found]
        raw = [r["raw_pixels"] for r in found]
        rows.append(
            {
                "set": set_name,
                "config": config,
                "seeds": [r["seed"] for r in found],
                "teacher": _mean(teacher),
                "teacher_sd": statistics.stdev(teacher) if len(teacher) > 1 else 0.0,
                "teacher_per_seed": teacher,
                "student": _mean([r["student"] for r in found]),
                "untrained": _mean(untrained),
                "raw_pixels": _mean(raw),
                "over_untrained": _mean(teacher) - _mean(untrained),
                "over_raw": _mean(teacher) - _mean(raw),
                "dataset": found[0]["dataset"],
            }
        )
    rows.sort(key=lambda r: (r["set"], -r["teacher"]))
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The summary as Markdown."""
    lines = [
        "| set | config | teacher k-NN@20 (mean ± sd) | per seed | student | untrained | raw pixels | over untrained | over raw |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        seeds = " / ".join(f"{v:.2f}" for v in r["teacher_per_seed"])
        lines.append(
            f"| {r['set']} | `{r['config']}` | {r['teacher']:.2f} ± {r['teacher_sd']:.2f} | "
            f"{seeds} | {r['student']:.2f} | {r['untrained']:.2f} | {r['raw_pixels']:.2f} | "
            f"{r['over_untrained']:+.2f} | {r['over_raw']:+.2f} |"
        )
    return "\n".join(lines)
