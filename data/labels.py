"""Whether a dataset carries labels: a flat folder of images lists every target as -1."""

from __future__ import annotations

from typing import Any

__all__ = ["unlabeled"]


def unlabeled(dataset: Any) -> bool:
    """True when ``dataset.targets`` exists, is not empty and holds only negative labels."""
    targets = getattr(dataset, "targets", None)
    return targets is not None and len(targets) > 0 and all(int(t) < 0 for t in targets)
