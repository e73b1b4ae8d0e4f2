"""Loading weights strictly: key checks that list what differs, wrapper prefixes stripped, and
:func:`load_backbone`, a checkpoint's backbone rebuilt from its ``backbone.json``.

Weights are read with safetensors only (never pickle).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ..backbones import create_dino_backbone
from .find import resolve_weights

__all__ = [
    "check_keys",
    "clean_state_dict",
    "load_backbone",
    "load_strict",
    "read_backbone_meta",
    "unwrapped_key",
]

_PREFIXES = ("module.", "_orig_mod.", "backbone.")
_COMPILED = "_orig_mod"  # torch.compile's OptimizedModule keeps the module it wraps under this


def unwrapped_key(key: str) -> str:
    """A parameter name without what wrappers add: every ``_orig_mod.`` (torch.compile, of the
    whole model or of any submodule) and leading ``module.`` (DDP), in any nesting."""
    parts = [p for p in key.split(".") if p != _COMPILED]
    while len(parts) > 1 and parts[0] == "module":
        parts.pop(0)
    return ".".join(parts)


def _listed(label: str, keys: list[str], limit: int) -> str:
    return f"{label} {len(keys)}: {', '.join(keys[:limit])}{' ...' if len(keys) > limit else ''}"


def check_keys(
    expected: Iterable[str] | Mapping[str, Sequence[int]], file: str | os.PathLike, what: str
) -> None:
    """Raise ValueError listing missing and unexpected keys of safetensors ``file`` vs
    ``expected``; when ``expected`` maps each key to its shape, also the tensors whose shape
    differs. Only the file's header is read (shapes are checked before anything is loaded)."""
    with safe_open(os.fspath(file), framework="pt") as f:
        found = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    if found.keys() == set(expected):
        if isinstance(expected, Mapping):
            _check_shapes(expected, found, file, what)
        return
    missing, unexpected = sorted(set(expected) - found.keys()), sorted(found.keys() - set(expected))
    parts = [
        _listed(label, keys, 20)
        for label, keys in (("missing", missing), ("unexpected", unexpected))
        if keys
    ]
    raise ValueError(
        f"{file}: {what} keys do not match this run's model ({'; '.join(parts)}); "
        "was it written with another model.backbone / model.head config?"
    )


def _check_shapes(
    expected: Mapping[str, Sequence[int]],
    found: Mapping[str, tuple[int, ...]],
    file: str | os.PathLike,
    what: str,
) -> None:
    wrong = [
        f"{key} {list(found[key])} in the file, {list(shape)} in this run"
        for key, shape in sorted(expected.items())
        if tuple(shape) != found[key]
    ]
    if wrong:
        more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
        raise ValueError(
            f"{file}: {what} shapes do not match this run's model ({'; '.join(wrong[:3])}{more}); "
            "was it written with another model.head (out_dim, hidden_dim, bottleneck_dim) or "
            "model.backbone config?"
        )


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``_orig_mod.``, ``backbone.``) from every key, and
    ``_orig_mod.`` wherever it is (a compiled submodule)."""
    out = {}
    for key, value in state.items():
        key = unwrapped_key(key)
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        out[key] = value
    return out


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], file: Path) -> None:
    """``model.load_state_dict(state, strict=True)``; a mismatch is one ValueError naming ``file``
    and the missing / unexpected keys (or the first wrong shape)."""
    expected, found = set(model.state_dict()), set(state)
    if expected != found:
        missing, unexpected = sorted(expected - found), sorted(found - expected)
        parts = [
            _listed(label, keys, 8)
            for label, keys in (("missing", missing), ("unexpected", unexpected))
            if keys
        ]
        raise ValueError(f"{file}: keys do not match the backbone ({'; '.join(parts)})")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # same keys, wrong shapes
        first = str(err).strip().splitlines()[-1].strip()
        raise ValueError(f"{file}: {first}") from None


def read_backbone_meta(path: Path) -> dict[str, Any]:
    """A ``backbone.json``: at least ``backbone`` and ``num_features`` (``backbone_kwargs``
    defaults to ``{}``)."""
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    for key in ("backbone", "num_features"):
        if key not in meta:
            raise ValueError(f"{path}: key {key!r} missing")
    meta.setdefault("backbone_kwargs", {})
    return meta


def load_backbone(
    path: str | os.PathLike, which: str = "teacher"
) -> tuple[nn.Module, dict[str, Any]]:
    """A pretrained headless backbone in eval mode and its metadata.

    Args:
        path: a checkpoint directory (``…/checkpoints/step_XXXXXXXX``), a run's output directory
            (its newest valid checkpoint) or a ``*.safetensors`` file with ``backbone.json``
            beside it.
        which: ``"teacher"`` (the reference's choice for evaluation) or ``"student"``.

    Returns:
        ``(model, meta)``; ``model(x: [B, 3, H, W])`` → ``[B, meta["num_features"]]``; ``meta``
        holds ``backbone``, ``backbone_kwargs``, ``num_features``, ``image_size``, ``mean``,
        ``std``, ``step`` and ``source`` (the weights file).
    """
    weights, meta_path = resolve_weights(Path(path), which)
    meta = read_backbone_meta(meta_path)
    model = create_dino_backbone(meta["backbone"], **meta["backbone_kwargs"])
    try:
        state = load_file(os.fspath(weights))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from None
    expected = set(model.state_dict())
    if set(state) != expected:  # a backbone may own keys named "backbone.*"
        state = clean_state_dict(state)
    extra = set(state) - expected
    if extra and expected <= set(state) and all(k.startswith("head.") for k in extra):
        raise ValueError(
            f"{weights}: a backbone plus a DINO head ({len(extra)} head.* keys); give the "
            f"{which}_backbone.safetensors of that checkpoint instead"
        )
    load_strict(model, state, weights)
    meta["source"] = str(weights)
    return model.eval(), meta
