"""Export a frozen feature extractor (images → features) and load it back.

Three formats, each a model file plus a sidecar JSON with the same stem (``extractor.onnx`` +
``extractor.json``) that says what a user needs: input size, mean/std, feature dimension,
backbone preset and kwargs, source checkpoint, format, unimix version.

=============  ====================  =========================================================
format         file                  loads with
=============  ====================  =========================================================
safetensors    ``*.safetensors``     unimix (``load_extractor``), or timm/unimix + safetensors
torchscript    ``*.pt``              plain torch: ``torch.jit.load(path)``
onnx           ``*.onnx``            onnxruntime: ``InferenceSession(path)``
=============  ====================  =========================================================

Without unimix::

    import json, torch
    meta = json.load(open("extractor.json"))
    model = torch.jit.load("extractor.pt")          # [B, 3, S, S] normalised → [B, D]
    features = model(images)                        # S = meta["image_size"]

    import onnxruntime as ort, numpy as np
    session = ort.InferenceSession("extractor.onnx")
    features = session.run(None, {"images": images.astype(np.float32)})[0]

Inputs are float32 images already normalised with ``meta["mean"]``/``meta["std"]`` at
``meta["image_size"]`` px. The batch axis is dynamic in every format; TorchScript is traced at
``image_size``, so other sizes are only guaranteed by the safetensors and ONNX (when
``meta["dynamic_size"]``) files. Nothing here unpickles: weights go through safetensors, the
sidecar through ``json``, TorchScript through ``torch.jit.load`` (a program format, not pickle
of arbitrary objects) and ONNX through onnxruntime.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["FORMATS", "export_extractor", "load_extractor", "sidecar_path"]

Format = Literal["safetensors", "torchscript", "onnx"]
FORMATS: dict[str, str] = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON description beside an exported file: same stem, ``.json``."""
    return Path(path).with_suffix(".json")


def _output_path(output: str | os.PathLike, fmt: str) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    path = Path(output)
    if path.suffix != FORMATS[fmt]:
        path = path.with_name(path.name + FORMATS[fmt]) if path.suffix == "" else path
    if path.suffix != FORMATS[fmt]:
        raise ValueError(f"{path}: a {fmt} export must end in {FORMATS[fmt]}")
    return path


def _example(meta: dict[str, Any], batch: int = 2) -> torch.Tensor:
    size = int(meta.get("image_size") or 224)
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def export_extractor(
    model: nn.Module, meta: dict[str, Any], output: str | os.PathLike, format: Format
) -> Path:
    """Write ``model`` (headless: ``[B, 3, S, S]`` → ``[B, D]``) as a frozen extractor.

    Args:
        model: the backbone (e.g. from :func:`~unimix.eval.load_backbone`); exported in eval mode.
        meta: at least ``backbone``, ``num_features``, ``image_size``, ``mean``, ``std``
            (what ``load_backbone`` returns).
        output: file path; the format's suffix is added when it has none.

    Returns:
        The model file's path (its sidecar is :func:`sidecar_path` of it).
    """
    from unimix import __version__

    path = _output_path(output, format)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    example = _example(meta)
    with torch.no_grad():
        reference = model(example)
    info = {
        "format": format,
        "backbone": meta.get("backbone"),
        "backbone_kwargs": meta.get("backbone_kwargs", {}),
        "num_features": int(reference.shape[1]),
        "image_size": int(example.shape[-1]),
        "mean": list(meta.get("mean") or (0.485, 0.456, 0.406)),
        "std": list(meta.get("std") or (0.229, 0.224, 0.225)),
        "input": "float32 [B, 3, image_size, image_size], normalised with mean/std",
        "output": "float32 [B, num_features] (not L2-normalised)",
        "source": meta.get("source"),
        "step": meta.get("step"),
        "unimix_version": __version__,
        "dynamic_size": format == "safetensors",
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        if format == "safetensors":
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            save_file(state, os.fspath(tmp), metadata={"format": "pt"})
        elif format == "torchscript":
            _export_torchscript(model, example, tmp)
        else:
            info["dynamic_size"] = _export_onnx(model, example, tmp)
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        name = meta.get("backbone") or type(model).__name__
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RuntimeError(f"exporting {name} to {format} failed: {first}") from err
    sidecar_path(path).write_text(json.dumps(info, indent=1))
    return path


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    # Tracing, not scripting: timm models are not all scriptable, all are traceable.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example, check_trace=False)
        traced = torch.jit.freeze(traced.eval())
    torch.jit.save(traced, os.fspath(path))


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> bool:
    """Export with a dynamic batch axis (and dynamic H, W when the model allows); returns
    whether H and W are dynamic."""
    axes_all = {"images": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}}
    axes_batch = {"images": {0: "batch"}, "features": {0: "batch"}}
    for axes, dynamic_size in ((axes_all, True), (axes_batch, False)):
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (example,),
                    os.fspath(path),
                    input_names=["images"],
                    output_names=["features"],
                    dynamic_axes=axes,
                    opset_version=17,
                    dynamo=False,
                )
            if dynamic_size and not _onnx_runs_at(path, example, example.shape[-1] // 2):
                continue
            return dynamic_size
        except Exception:
            if not dynamic_size:
                raise
    return False


def _onnx_runs_at(path: Path, example: torch.Tensor, size: int) -> bool:
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        x = torch.randn(1, 3, size, size).numpy()
        session.run(None, {"images": x})
        return True
    except Exception:
        return False


class OnnxExtractor(nn.Module):
    """An onnxruntime session behind ``nn.Module``'s call: ``[B, 3, S, S]`` → ``[B, D]`` (CPU)."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        super().__init__()
        import onnxruntime as ort

        self.session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        self.meta = meta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {"images": x})[0])


def load_extractor(path: str | os.PathLike) -> nn.Module:
    """Load any exported extractor; the returned module has ``.meta`` (the sidecar dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported extractor")
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side}: missing (the sidecar JSON describing {path.name})")
    try:
        meta = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{side}: not valid JSON ({err})") from None
    fmt = meta.get("format")
    if fmt not in FORMATS or path.suffix != FORMATS[fmt]:
        raise ValueError(f"{side}: format {fmt!r} does not match the file {path.name}")
    try:
        if fmt == "safetensors":
            from unimix.ssl.model import create_dino_backbone

            from .features import _load_strict

            model = create_dino_backbone(meta["backbone"], **meta.get("backbone_kwargs", {}))
            _load_strict(model, load_file(os.fspath(path)), path)
            model.eval()
        elif fmt == "torchscript":
            model = torch.jit.load(os.fspath(path), map_location="cpu").eval()
        else:
            model = OnnxExtractor(path, meta)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: cannot load this {fmt} extractor ({first})") from None
    model.meta = meta
    return model
