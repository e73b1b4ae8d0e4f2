"""What each kind of dataset needs from a run's settings: the one place that knows that
``"synthetic"`` is generated (size, count, seed), torchvision sets live under a ``root`` and
folders can be decoded once into RAM."""

from __future__ import annotations

import os
from typing import Any

from .build import DATASET_NAMES

__all__ = ["dataset_options", "is_generated"]


def is_generated(name: str | os.PathLike[str]) -> bool:
    """Whether ``name`` is generated on the fly (``"synthetic"``) rather than read from files."""
    return os.fspath(name).lower() == "synthetic"


def dataset_options(
    name: str | os.PathLike[str],
    *,
    root: str | None = None,
    num_samples: int | None = None,
    image_size: int | None = None,
    seed: int | None = None,
    cache: bool = False,
) -> dict[str, Any]:
    """The :func:`~unimix.data.build_dataset` options that apply to dataset ``name``.

    ``"synthetic"``: ``num_samples``, ``image_size`` and ``seed`` (the rest is ignored). Any other
    name: ``root`` when given; a folder (not a named dataset) also ``cache=True`` when ``cache``.
    Options left ``None`` are left out.
    """
    if is_generated(name):
        generated = {"num_samples": num_samples, "image_size": image_size, "seed": seed}
        return {key: value for key, value in generated.items() if value is not None}
    options: dict[str, Any] = {}
    if root is not None:
        options["root"] = root
    if cache and os.fspath(name).lower() not in DATASET_NAMES:
        options["cache"] = True  # a folder (the named sets are in RAM already)
    return options
