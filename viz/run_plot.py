"""The curves of one pretraining run (``unimix plot RUN``), from ``RUN/metrics.jsonl`` and, when
the run wrote it, ``RUN/knn.json``: DINO loss; the teacher's per-sample entropy against the
entropy of its batch-mean distribution (collapse drives their gap to 0); lr; teacher momentum;
online k-NN top-1 (with the final trained/untrained numbers as dotted lines); throughput.

Records are those of :class:`unimix.ssl.engine.monitor.Monitor` (and :mod:`unimix.ssl.engine.callbacks`):
``{"step", "loss", "lr", "momentum", "teacher_entropy", "teacher_mean_entropy", "img_per_s",
...}`` every ``logging.every_steps``, ``{"step", "knn_top1"}`` per online k-NN, and events.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .curves import Panel, Series, panels_figure, save_figure

__all__ = [
    "DEFAULT_OUTPUT",
    "KNN_FILE",
    "METRICS_FILE",
    "plot_run",
    "read_run",
    "run_figure",
    "run_panels",
]

METRICS_FILE = "metrics.jsonl"
KNN_FILE = "knn.json"
#: ``unimix plot RUN`` writes ``RUN/curves.png`` unless told ``--output``.
DEFAULT_OUTPUT = "curves.png"
#: Figure size in inches (at 100 dpi: 1200 × 650 pixels) and panels per row.
FIGSIZE = (12.0, 6.5)
COLUMNS = 3


def read_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``(records of metrics.jsonl, knn.json or None)``; lines cut by a kill are skipped.

    Raises:
        FileNotFoundError: ``run_dir`` or its ``metrics.jsonl`` does not exist (one line).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder")
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (is {run_dir} a pretraining output folder?)")
    records = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    knn = None
    if (run_dir / KNN_FILE).is_file():
        try:
            knn = json.loads((run_dir / KNN_FILE).read_text())
        except json.JSONDecodeError:
            knn = None
    return records, knn if isinstance(knn, dict) else None


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: list[dict[str, Any]], key: str, label: str, style: str = "-") -> Series:
    """``key`` against ``step`` over the records that have both as finite numbers."""
    points = [
        (r["step"], r[key]) for r in records if _number(r.get("step")) and _number(r.get(key))
    ]
    return Series(label, [p[0] for p in points], [p[1] for p in points], style)


def _knn_lines(knn: dict[str, Any] | None) -> list[tuple[str, float]]:
    lines = []
    for key, label in (("trained", "final: trained teacher"), ("untrained", "final: untrained")):
        if knn is not None and _number(knn.get(key)):
            lines.append((f"{label} {knn[key]:.1f}%", float(knn[key])))
    return lines


def run_panels(records: list[dict[str, Any]], knn: dict[str, Any] | None = None) -> list[Panel]:
    """The six panels of a run, in reading order (a panel with no points says "not logged"),
    every one over the same steps: the first to the last step the run logged (the k-NN panel
    too when it holds only the final numbers)."""
    steps = [r["step"] for r in records if _number(r.get("step")) and _number(r.get("loss"))]
    steps = steps or [r["step"] for r in records if _number(r.get("step"))]
    xlim = (float(min(steps)), float(max(steps))) if steps else None
    panels = [
        Panel("DINO loss", [_series(records, "loss", "")], ylabel="loss"),
        Panel(
            "teacher entropy (collapse: the two meet)",
            [
                _series(records, "teacher_entropy", "per sample"),
                _series(records, "teacher_mean_entropy", "of the batch mean"),
            ],
            ylabel="nats",
        ),
        Panel("learning rate", [_series(records, "lr", "")], ylabel="lr"),
        Panel("teacher momentum", [_series(records, "momentum", "")], ylabel="momentum"),
        Panel(
            "teacher k-NN top-1",
            [_series(records, "knn_top1", "online", "o-")],
            ylabel="top-1 (%)",
            hlines=_knn_lines(knn),
        ),
        Panel("throughput", [_series(records, "img_per_s", "")], ylabel="images / s"),
    ]
    for panel in panels:
        panel.xlim = xlim
    return panels


def run_figure(records: list[dict[str, Any]], knn: dict[str, Any] | None, title: str) -> Any:
    """The matplotlib figure of :func:`run_panels` under ``title``."""
    fig = panels_figure(run_panels(records, knn), COLUMNS, FIGSIZE)
    fig.suptitle(title, fontsize=11)
    return fig


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Draw the run's curves into the PNG ``output`` (default ``RUN/curves.png``); returns it.

    Raises:
        FileNotFoundError: no such run folder, or no ``metrics.jsonl`` in it.
    """
    run_dir = Path(run_dir)
    records, knn = read_run(run_dir)
    steps = [r["step"] for r in records if _number(r.get("step"))]
    title = f"{run_dir.resolve().name}: {max(steps) if steps else 0} steps"
    return save_figure(run_figure(records, knn, title), output or run_dir / DEFAULT_OUTPUT)
