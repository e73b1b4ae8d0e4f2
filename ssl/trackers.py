"""Experiment trackers of a run (``logging.trackers``): JSONL always, the rest through Accelerate.

``jsonl`` is unimix's own ``<output_dir>/metrics.jsonl`` (always written, listed or not);
``tensorboard``, ``wandb`` and ``mlflow`` are Accelerate's trackers (``Accelerator(log_with=…)``,
``init_trackers``, ``log``), each an optional package checked before anything is built.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unimix.config import ConfigError, to_dict

__all__ = [
    "PROJECT_SUBDIR",
    "TRACKER_PACKAGES",
    "accelerate_trackers",
    "flat_config",
    "tracker_init_kwargs",
]

#: Tracker name -> (module that must be importable, how to install it).
TRACKER_PACKAGES: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", 'pip install "unimix[tensorboard]"'),
    "wandb": ("wandb", "pip install wandb"),
    "mlflow": ("mlflow", "pip install mlflow"),
}
#: Accelerate's logging dir inside the run's output dir (TensorBoard writes
#: ``<output_dir>/tensorboard/<logging.project>/``).
PROJECT_SUBDIR = "tensorboard"


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
    the run after its output folder, and MLflow keeps its file store in ``<output_dir>/mlruns``."""
    name = Path(output_dir).resolve().name
    return {
        # SummaryWriter purges steps >= purge_step: the checkpointed step itself stays
        "tensorboard": {"purge_step": start_step + 1} if start_step else {},
        "wandb": {"name": name, "dir": str(output_dir)},
        "mlflow": {"run_name": name, "logging_dir": str(Path(output_dir) / "mlruns")},
    }
