"""Every model file the evaluation commands read, through one entry: :func:`load_model` takes a
run folder, a checkpoint folder or weights file (:func:`~unimix.checkpoint.load_backbone`), an
exported extractor (:func:`load_extractor`) or a ``--format hf`` folder
(:func:`~unimix.eval.hf_export.load_hf_folder`). Nothing is unpickled: weights through
safetensors, sidecars through ``json``, TorchScript through ``torch.jit.load``, ONNX through
onnxruntime."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from ..backbones import create_dino_backbone
from ..checkpoint import BACKBONE_META, clean_state_dict, load_backbone, load_strict
from .formats import FORMATS, TORCHSCRIPT_META, from_json_texts, sidecar_path
from .hf_export import is_hf_folder, load_hf_folder
from .onnx_format import OnnxExtractor, onnx_session

__all__ = [
    "clean_state_dict",
    "embedded_meta",
    "load_backbone",
    "load_extractor",
    "load_model",
]


def load_model(path: str | os.PathLike, which: str = "teacher") -> tuple[nn.Module, dict[str, Any]]:
    """``(model, meta)`` of any file or folder unimix writes: a ``--format hf`` folder, a run or
    checkpoint folder or a ``*.safetensors`` weights file beside ``backbone.json`` (``which``
    network; a ``teacher_*`` / ``student_*`` file says its own), or an exported extractor
    (``meta`` is its sidecar plus ``model_file``)."""
    p = Path(path)
    if is_hf_folder(p):
        return load_hf_folder(p)
    if p.is_dir() or (p.suffix == ".safetensors" and p.with_name(BACKBONE_META).is_file()):
        model, meta = load_backbone(p, which)
        if p.is_file() and p.name.startswith(("teacher_", "student_")):
            which = p.name.split("_")[0]  # the weights file says which network it holds
        return model, {**meta, "which": which}
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such checkpoint or exported extractor")
    model = load_extractor(p)
    return model, {**model.meta, "model_file": str(p)}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def embedded_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar's keys as the model file itself carries them (ONNX ``metadata_props``, the
    safetensors header, TorchScript's ``unimix.json``); None when the file has none."""
    path = Path(path)
    if path.suffix == FORMATS["onnx"]:
        session = onnx_session(path)
        texts = dict(session.get_modelmeta().custom_metadata_map) if session else {}
        meta = from_json_texts(texts)
    elif path.suffix == FORMATS["safetensors"]:
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt") as f:
            meta = from_json_texts(f.metadata() or {})
        meta["format"] = "safetensors"  # the header's own "format" is safetensors' "pt"
    elif path.suffix == FORMATS["torchscript"]:
        files = {TORCHSCRIPT_META: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=files)
        meta = json.loads(files[TORCHSCRIPT_META]) if files[TORCHSCRIPT_META] else {}
    else:
        return None
    return meta if meta.get("image_size") and meta.get("num_features") else None


def _extractor_meta(path: Path) -> dict[str, Any]:
    """The sidecar of ``path`` or, when it was lost, the file's own metadata."""
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{side}: not valid JSON ({_first_line(err)})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{side}: expected a JSON object, got {type(meta).__name__}")
        return meta
    try:
        embedded = embedded_meta(path)
    except Exception as err:  # onnxruntime / safetensors / torch.jit: many error types
        raise ValueError(f"{path}: cannot read this extractor ({_first_line(err)})") from None
    if embedded is None:
        raise FileNotFoundError(
            f"{side}: missing (the sidecar JSON describing {path.name}), and {path.name} "
            "carries no unimix metadata of its own"
        )
    return embedded


def load_extractor(path: str | os.PathLike) -> nn.Module:
    """Load any exported extractor in eval mode; the module has ``.meta`` (the sidecar dict).

    ``model(images [B, 3, S, S])`` → ``[B, meta["num_features"]]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported extractor")
    side = sidecar_path(path)
    meta = _extractor_meta(path)
    fmt = meta.get("format")
    if fmt not in FORMATS or path.suffix != FORMATS[fmt]:
        raise ValueError(f"{side}: format {fmt!r} does not match the file {path.name}")
    model: nn.Module
    try:
        if fmt == "safetensors":
            if not meta.get("backbone"):
                raise ValueError(f"{side}: key 'backbone' missing (the preset to rebuild)")
            model = create_dino_backbone(meta["backbone"], **(meta.get("backbone_kwargs") or {}))
            load_strict(model, load_file(os.fspath(path)), path)
            model.eval()
        elif fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
                model = torch.jit.load(os.fspath(path), map_location="cpu").eval()
        else:
            model = OnnxExtractor(path, meta)
    except Exception as err:
        if isinstance(err, ValueError) and str(err).startswith((str(path), str(side))):
            raise  # already ours: one line naming the file
        raise ValueError(f"{path}: cannot load this {fmt} extractor ({_first_line(err)})") from None
    model.meta = meta
    return model
