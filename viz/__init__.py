"""Tools that look inside trained or untrained backbones, and draw runs (above :mod:`unimix.ssl`).

``unimix affinity`` (:mod:`unimix.viz.affinity_cli`): each stage's affinity row for one query
pixel.
``unimix plot RUN`` (:mod:`unimix.viz.run_plot`): a pretraining run's learning curves as a PNG;
:mod:`unimix.viz.curves` holds the panels it shares with :mod:`unimix.viz.race_plot`.

Names are imported on first use, so ``unimix plot`` loads matplotlib but not torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "StageAffinity",
    "collect_stage_affinities",
    "load_image",
    "plot_race",
    "plot_run",
    "render_affinity_grid",
]

_WHERE = {
    "StageAffinity": "affinity",
    "collect_stage_affinities": "affinity",
    "load_image": "inputs",
    "plot_race": "race_plot",
    "plot_run": "run_plot",
    "render_affinity_grid": "render",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'unimix.viz' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
