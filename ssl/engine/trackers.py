"""Experiment trackers of a run (``logging.trackers``): JSONL always, the rest through Accelerate.

``jsonl`` is unimix's own ``<output_dir>/metrics.jsonl`` (always written, listed or not);
``tensorboard``, ``wandb`` and ``mlflow`` are Accelerate's trackers (``Accelerator(log_with=…)``,
``init_trackers``, ``log``), each an optional package checked before anything is built. Every
tracker keeps its files in the run's output folder: TensorBoard ``<output_dir>/tensorboard/``,
W&B ``<output_dir>/wandb/``, MLflow ``<output_dir>/mlruns/`` (:func:`use_run_stores`: works with
``mlflow`` and ``mlflow-skinny`` alike; ``MLFLOW_TRACKING_URI`` set by the user wins).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...config import ConfigError, to_dict

__all__ = [
    "PROJECT_SUBDIR",
    "TRACKER_PACKAGES",
    "MLFLOW_SUBDIR",
    "accelerate_trackers",
    "flat_config",
    "tracker_init_kwargs",
    "use_run_stores",
]

#: Tracker name -> (module that must be importable, how to install it).
TRACKER_PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", 'pip install "unimix[tensorboard]"'),
    "wandb": ("wandb", "pip install wandb"),
    "mlflow": ("mlflow", "pip install mlflow (or mlflow-skinny)"),
}
#: Accelerate's logging dir inside the run's output dir (TensorBoard writes
#: ``<output_dir>/tensorboard/<logging.project>/``).
PROJECT_SUBDIR = "tensorboard"
#: MLflow's store (database or file store) inside the run's output dir.
MLFLOW_SUBDIR = "mlruns"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent that fails to import, or a None in sys.modules
        return False


def accelerate_trackers(names: Sequence[str]) -> list[str]:
    """The trackers Accelerate runs for ``logging.trackers`` (everything but ``jsonl``, once
    each, in order); raises a one-line ConfigError when one is unknown or not installed."""
    chosen: list[str] = []
    for name in names:
        if name == "jsonl" or name in chosen:
            continue
        if name not in TRACKER_PACKAGES:
            accepted = ", ".join(["jsonl", *TRACKER_PACKAGES])
            raise ConfigError(f"logging.trackers: unknown tracker {name!r}; accepted: {accepted}")
        module, install = TRACKER_PACKAGES[name]
        if not _installed(module):
            raise ConfigError(f"logging.trackers: {name} is not installed ({install})")
        chosen.append(name)
    return chosen


def flat_config(cfg: Any) -> dict[str, bool | int | float | str]:
    """A config dataclass as one level of dotted keys (``optim.base_lr``), every value a bool,
    int, float or str (lists, mappings and None as their text) as trackers' hparams take them."""
    flat: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
            for key, item in value.items():
                walk(f"{prefix}{key}.", item)
        elif isinstance(value, bool | int | float | str):
            flat[prefix.rstrip(".")] = value
        else:
            flat[prefix.rstrip(".")] = str(value)

    walk("", to_dict(cfg))
    return flat


def tracker_init_kwargs(output_dir: Path, start_step: int) -> dict[str, dict[str, Any]]:
    """Per-tracker ``init_trackers`` arguments: TensorBoard drops the events of steps after
    ``start_step`` (a resumed run rewrites them, as ``metrics.jsonl`` does); W&B and MLflow name
    the run after its output folder (MLflow's store: :func:`use_run_stores`)."""
    name = Path(output_dir).resolve().name
    return {
        # SummaryWriter purges steps >= purge_step: the checkpointed step itself stays
        "tensorboard": {"purge_step": start_step + 1} if start_step else {},
        "wandb": {"name": name, "dir": str(output_dir)},
        # the experiment's artifacts next to the store (MLflow's default: ./mlartifacts)
        "mlflow": {"run_name": name, "logging_dir": str(_mlflow_store(output_dir) / "artifacts")},
    }


def _mlflow_store(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir).resolve() / MLFLOW_SUBDIR


def use_run_stores(names: Sequence[str], output_dir: str | os.PathLike) -> None:
    """Point the trackers that have a process-wide store at the run's folder (call on the main
    process, before the trackers start). MLflow, unless ``MLFLOW_TRACKING_URI`` is set: the
    database ``<output_dir>/mlruns/mlflow.db`` with ``mlflow`` (MLflow 3's recommended backend;
    its default puts it in the working directory), the file store ``<output_dir>/mlruns`` with
    ``mlflow-skinny``, which has no database driver (sqlalchemy)."""
    if "mlflow" not in names or os.environ.get("MLFLOW_TRACKING_URI"):
        return
    import mlflow

    store = _mlflow_store(output_dir)
    store.mkdir(parents=True, exist_ok=True)
    if _distribution("mlflow"):  # the full package: its database backend (sqlalchemy, alembic)
        mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow.db'}")
    else:  # MLflow 3 keeps the file store behind an opt-in; it is the only local one skinny has
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(store.as_uri())


def _distribution(name: str) -> bool:
    """Whether the distribution ``name`` is installed (``mlflow`` vs ``mlflow-skinny``: both
    install the module ``mlflow``)."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True
