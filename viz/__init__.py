"""Tools that look inside trained or untrained backbones (above :mod:`unimix.eval`).

``unimix affinity`` (:mod:`unimix.viz.cli`): each stage's affinity row for one query pixel.
"""

from .affinity import StageAffinity, collect_stage_affinities
from .cli import load_image, main_affinity
from .render import render_affinity_grid

__all__ = [
    "StageAffinity",
    "collect_stage_affinities",
    "load_image",
    "main_affinity",
    "render_affinity_grid",
]
