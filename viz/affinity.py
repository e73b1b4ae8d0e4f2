"""Affinity rows: where does one query position gather its context, stage by stage?

Every unimix token mixer can return its affinity ``A`` (``[B, G, N, N]``, see
:class:`unimix.backbones.TokenMixer`). :func:`collect_stage_affinities` runs a model on one
image, catches the input of the last mixer of each stage (and of each mixer type within a
stage) with forward hooks, asks that mixer for ``A`` and keeps the row of a chosen query pixel.
Building ``A`` costs ``G·N²`` floats per mixer: meant for small inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..backbones import TokenMixer

__all__ = ["MAX_AFFINITY_BYTES", "StageAffinity", "collect_stage_affinities"]

MAX_AFFINITY_BYTES = 2 * 1024**3


@dataclass
class StageAffinity:
    """One panel: the query's affinity row for one mixer.

    Attributes:
        stage: stage label (``"stage 1"``...), from the model's ``feature_info``.
        module: dotted name of the mixer inside the model.
        mixer: mixer class name.
        row: ``[G, Hk, Wk]`` the query's row of ``A`` for every group, on the key grid.
        query_cell: ``(row, col)`` of the query on the stage's query grid.
        query_grid: ``(Hq, Wq)`` size of the query grid (differs from the key grid when strided).
        note: the mixer's own note about what ``A`` leaves out.
    """

    stage: str
    module: str
    mixer: str
    row: torch.Tensor
    query_cell: tuple[int, int]
    query_grid: tuple[int, int]
    note: str = ""


# -- collecting ----------------------------------------------------------------------------------


def _stage_names(model: nn.Module) -> list[str]:
    """Module names of the stages, from timm's ``feature_info`` (stem excluded when possible)."""
    info = getattr(model, "feature_info", None) or []
    names = [d["module"] for d in info if isinstance(d, dict) and "module" in d]
    return [n for n in names if n.startswith(("stages", "layer"))] or names


def _stage_label(name: str, stage_names: list[str]) -> tuple[int, str]:
    for index, prefix in enumerate(stage_names):
        if name == prefix or name.startswith(prefix + "."):
            return index, f"stage {index + 1}"
    head = ".".join(name.split(".")[:2])
    return len(stage_names), head


def collect_stage_affinities(
    model: nn.Module, image: torch.Tensor, query: tuple[int, int]
) -> list[StageAffinity]:
    """Run ``model`` on ``image`` (``[3, H, W]``, normalised) and read each stage's affinity row.

    ``query`` is ``(row, col)`` in image pixels; each stage maps it to its own grid.
    """
    if image.ndim != 3:
        raise ValueError(f"image: expected [3, H, W], got {tuple(image.shape)}")
    H, W = image.shape[-2:]
    if not (0 <= query[0] < H and 0 <= query[1] < W):
        raise ValueError(f"--query: {query[0]},{query[1]} lies outside the {H}x{W} input image")
    stage_names = _stage_names(model)
    chosen = _chosen_mixers(model, stage_names)
    inputs = _mixer_inputs(model, image, chosen)
    return [
        _panel(name, mixer, inputs[name], query, (H, W), _stage_label(name, stage_names)[1])
        for name, mixer in chosen
    ]


def _chosen_mixers(model: nn.Module, stage_names: list[str]) -> list[tuple[str, nn.Module]]:
    """The last mixer of each (stage, mixer type), in network order."""
    mixers = [(n, m) for n, m in model.named_modules() if isinstance(m, TokenMixer)]
    if not mixers:
        raise ValueError(f"model {type(model).__name__} has no unimix TokenMixer to inspect")
    chosen: dict[tuple[int, str], tuple[str, nn.Module]] = {}
    for name, mixer in mixers:
        key = (_stage_label(name, stage_names)[0], type(mixer).__name__)
        chosen[key] = (name, mixer)  # a key keeps its first place, the value is the last mixer
    return list(chosen.values())


def _mixer_inputs(
    model: nn.Module, image: torch.Tensor, chosen: list[tuple[str, nn.Module]]
) -> dict[str, torch.Tensor]:
    """The input of each chosen mixer in one forward pass of ``image``, caught by hooks."""
    inputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def save(_module: nn.Module, args: tuple, _output: torch.Tensor) -> None:
            inputs[name] = args[0].detach()

        return save

    handles = [mixer.register_forward_hook(hook(name)) for name, mixer in chosen]
    try:
        with torch.no_grad():
            forward = getattr(model, "forward_features", model)
            forward(image.unsqueeze(0))
    finally:
        for handle in handles:
            handle.remove()
    return inputs


def _panel(
    name: str,
    mixer: nn.Module,
    x: torch.Tensor,
    query: tuple[int, int],
    image_size: tuple[int, int],
    label: str,
) -> StageAffinity:
    """The query's row of ``mixer``'s affinity on input ``x``."""
    H, W = image_size
    Hk, Wk = x.shape[-2:]
    n = Hk * Wk
    if 4 * x.shape[1] * n * n * 4 > MAX_AFFINITY_BYTES:
        raise ValueError(
            f"--size: {H}x{W} input gives a {Hk}x{Wk} map at {name}; its affinity would not "
            f"fit in memory, use a smaller --size (e.g. {max(16, H * 48 // max(Hk, Wk))})"
        )
    with torch.no_grad():
        trace = mixer.trace(x)
    A = trace.affinity[0]  # [G, Nq, Nk]
    Hq, Wq = trace.output.shape[-2:]  # queries live on the output grid (strided mixers)
    if Hq * Wq != A.shape[-2]:
        raise ValueError(f"{name}: affinity has {A.shape[-2]} rows for a {Hq}x{Wq} output")
    cell = (min(query[0] * Hq // H, Hq - 1), min(query[1] * Wq // W, Wq - 1))
    row = A[:, cell[0] * Wq + cell[1], :].reshape(-1, Hk, Wk)
    return StageAffinity(label, name, type(mixer).__name__, row, cell, (Hq, Wq), trace.note)
