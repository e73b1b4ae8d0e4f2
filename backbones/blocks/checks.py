"""Argument checks the blocks share (every block takes the skeleton's common arguments)."""

from __future__ import annotations

__all__ = ["require_no_dropout", "require_same_shape"]


def require_same_shape(block: str, dim: int, dim_out: int | None, stride: int) -> None:
    """Blocks whose stage downsamples before them keep their input's width and resolution."""
    if (dim_out or dim) != dim or stride != 1:
        raise ValueError(
            f"{block} keeps its input's shape: got dim={dim}, dim_out={dim_out}, "
            f"stride={stride} (downsample in the stage instead)"
        )


def require_no_dropout(block: str, proj_drop: float) -> None:
    """Blocks without an MLP dropout accept only ``proj_drop=0``."""
    if proj_drop:
        raise ValueError(f"{block} has no dropout; got proj_drop={proj_drop}")
