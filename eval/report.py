"""Evaluation reports: one compact table on stdout and the same rows as JSON."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "EVAL_DIR",
    "RUN_CONFIG",
    "RUN_FILES",
    "check_report_path",
    "default_report_path",
    "format_table",
    "report_home",
    "write_report",
]


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows of dicts as an aligned text table (floats with 2 decimals, missing as '-')."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.2f}"
        return str(value)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_report(path: str | os.PathLike, report: dict[str, Any]) -> Path:
    """Write ``report`` as JSON (atomically: a temporary file renamed into place); a path that
    cannot be written is one ValueError line naming it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(report, indent=1, default=str))
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ValueError(f"cannot write the report {path}: {err.strerror or err}") from None
    return path


#: The folder ``unimix knn`` / ``unimix linear`` write their reports into by default: inside the
#: run a checkpoint belongs to, or beside an exported model (never the working directory).
EVAL_DIR = "eval"
#: The resolved config a pretraining run writes into its output directory.
RUN_CONFIG = "config.yaml"
#: Files of a run's output folder a report must never replace.
RUN_FILES = (RUN_CONFIG, "metrics.jsonl", "knn.json", "curves.png")


def _slug(text: str) -> str:
    """``text`` as a file-name part: a path's last component, other characters than
    letters, digits, ``.``, ``_`` and ``-`` as ``_``."""
    name = Path(str(text).rstrip("/\\")).name or str(text)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "data"


def default_report_path(
    home: str | os.PathLike, command: str, label: str, data: str, split: str
) -> Path:
    """``HOME/eval/<command>-<label>-<data>-<split>.json``: e.g.
    ``runs/quickstart/eval/knn-teacher-step160-synthetic-test.json``. ``label`` names the network
    (``teacher-step160``, an exported file's name), so two networks never share a report."""
    parts = [command, _slug(label), _slug(data), _slug(split)]
    return Path(home) / EVAL_DIR / ("-".join(parts) + ".json")


def report_home(path: str | os.PathLike, meta: dict[str, Any]) -> tuple[Path, str]:
    """``(folder, label)`` of the default report path of the model at ``path`` (``meta`` from
    :func:`~unimix.eval.load.load_model`): a training checkpoint's run folder and
    ``<which>-step<N>``; an exported file's folder and its file name; an hf folder itself and
    its name."""
    from ..checkpoint import CHECKPOINTS_DIR  # imports torch: not at the commands' --help

    p = Path(path)
    if meta.get("hf_folder"):
        return p, p.resolve().name
    if meta.get("model_file"):
        return p.parent, p.name
    if p.is_file():
        home = p.parents[2] if p.parent.parent.name == CHECKPOINTS_DIR else p.parent
    else:
        home = p.parent.parent if p.parent.name == CHECKPOINTS_DIR else p
    which, step = meta.get("which", "teacher"), meta.get("step")
    return home, which if step is None else f"{which}-step{step}"


def check_report_path(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse (one-line ValueError) a report path that would replace a run's own file
    (``config.yaml``, ``metrics.jsonl``, ``knn.json``, ``curves.png`` of a folder holding a
    ``config.yaml``) or anything inside a run's ``checkpoints/``."""
    given, path = path, Path(path).absolute()
    run_file = path.name in RUN_FILES and (path.parent / RUN_CONFIG).is_file()
    in_checkpoints = any(
        f.name == "checkpoints" and (f.parent / RUN_CONFIG).is_file() for f in path.parents
    )
    if run_file or in_checkpoints:
        raise ValueError(
            f"{option} {given}: would replace a file of the run; give another path (the default "
            f"writes into the run's {EVAL_DIR}/ folder)"
        )
    _check_writable(given, path, option)


def _check_writable(given: str | os.PathLike, path: Path, option: str) -> None:
    """Refuse, before any work, a report path that cannot be written: a folder, a path under a
    file, a read-only file system or folder (the report was lost after the whole computation)."""
    if path.is_dir():
        raise ValueError(f"{option} {given}: a folder; give a file path, e.g. {path / 'knn.json'}")
    existing = next((p for p in path.parents if p.exists()), Path(path.anchor))
    if not existing.is_dir():
        raise ValueError(f"{option} {given}: {existing} is a file, not a folder")
    target = path if path.exists() else existing
    if not os.access(target, os.W_OK | (0 if target == path else os.X_OK)):
        why = "read-only file system" if _read_only(existing) else "no permission"
        raise ValueError(f"{option} {given}: cannot be written ({why} at {target})")


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False
