"""Export a frozen feature extractor (images → features): one model file (safetensors,
TorchScript or ONNX) plus a sidecar JSON named after the whole file name (``extractor.onnx`` →
``extractor.onnx.json``) holding what a user needs (size, mean/std, feature width, preset,
source, format, version); the model file carries the same keys itself, so
:func:`~unimix.eval.load_extractor` also loads a file whose sidecar was lost. Every export is
checked before it is written (its features at another batch size, and for dynamic ONNX another
size, equal the model's to 1e-4). Formats, layout and loading without unimix: docs/export.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..checkpoint import CHECKPOINTS_DIR, save_safetensors
from .formats import FORMATS, TORCHSCRIPT_META, json_texts, sidecar_path
from .onnx_format import onnx_export, onnx_session, set_onnx_metadata

__all__ = [
    "FORMATS",
    "ExportWriteError",
    "export_extractor",
    "export_write_error",
    "portable_source",
    "sidecar_path",
]

Format = Literal["safetensors", "torchscript", "onnx"]
_TOLERANCE = 1e-4  # export-time check; the round-trip tests hold the formats to 1e-5


def portable_source(source: str | os.PathLike | None) -> str | None:
    """A weights path as the run knows it, never absolute: ``checkpoints/step_X/<file>`` inside
    a run's checkpoints folder, else the file name alone."""
    if not source:
        return None
    path = Path(source)
    if len(path.parts) >= 3 and path.parent.parent.name == CHECKPOINTS_DIR:
        return Path(*path.parts[-3:]).as_posix()
    return path.name


def is_folder_path(output: str | os.PathLike) -> bool:
    """An existing directory, or a path written with a trailing separator (``exports/``)."""
    text = os.fspath(output)
    return Path(text).is_dir() or text.endswith(tuple(s for s in (os.sep, os.altsep) if s))


def _output_path(output: str | os.PathLike, fmt: str) -> Path:
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    suffix = FORMATS[fmt]
    path = Path(output)
    if is_folder_path(output):  # created by the export when it does not exist yet
        return path / f"extractor{suffix}"
    if path.suffix == "":
        return path.with_name(path.name + suffix)
    if path.suffix != suffix:
        raise ValueError(f"{path}: {fmt} exports must end in {suffix}")
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _images(batch: int, size: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _sidecar(meta: dict[str, Any], format: str, num_features: int, size: int) -> dict[str, Any]:
    """The sidecar's keys for ``meta`` (see :func:`export_extractor`)."""
    from .. import __version__

    return {
        "format": format,
        "backbone": meta.get("backbone"),
        "backbone_kwargs": meta.get("backbone_kwargs") or {},
        "num_features": num_features,
        "image_size": size,
        "mean": [float(v) for v in meta.get("mean") or (0.485, 0.456, 0.406)],
        "std": [float(v) for v in meta.get("std") or (0.229, 0.224, 0.225)],
        "input_name": "images",
        "output_name": "features",
        "input": "float32 [B, 3, image_size, image_size] in [0, 1], normalised with mean/std",
        "output": "float32 [B, num_features], not L2-normalised",
        "dynamic_size": format == "safetensors",
        "source": portable_source(meta.get("source")),
        "step": meta.get("step"),
        "which": meta.get("which"),
        "trained_image_size": meta.get("trained_image_size") or size,
        "unimix_version": __version__,
    }


def export_extractor(
    model: nn.Module, meta: dict[str, Any], output: str | os.PathLike, format: Format
) -> Path:
    """Write ``model`` (headless: ``[B, 3, S, S]`` → ``[B, D]``) as a frozen feature extractor.

    Args:
        model: the backbone (e.g. from :func:`~unimix.eval.load_backbone`); exported in eval
            mode (its mode is restored afterwards).
        meta: ``image_size`` (default 224), ``mean``/``std`` (default ImageNet's), and for
            safetensors ``backbone`` (+ ``backbone_kwargs``) to rebuild it; ``source`` and
            ``step`` are copied when present (what ``load_backbone`` returns).
        output: a file path (the format's suffix is added when it has none) or a directory.
        format: ``"safetensors"``, ``"torchscript"`` or ``"onnx"``.

    Returns:
        The model file's path; its sidecar is :func:`sidecar_path` of it.
    """
    path = _output_path(output, format)
    name = meta.get("backbone") or type(model).__name__
    if format == "safetensors" and not meta.get("backbone"):
        raise ValueError(
            "meta['backbone']: a safetensors export needs the preset name to rebuild the model"
        )
    size = int(meta.get("image_size") or 224)
    example = _images(2, size, seed=0)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(example)
        if reference.ndim != 2:
            raise ValueError(
                f"{name}: expected features [B, D] from a headless model, got "
                f"{tuple(reference.shape)} (create it with num_classes=0)"
            )
        info = _sidecar(meta, format, int(reference.shape[1]), size)
        _write_model_file(model, example, path, info, name)
    finally:
        model.train(was_training)
    _write_atomically(sidecar_path(path), json.dumps(info, indent=1))
    return path


def _write_model_file(
    model: nn.Module, example: torch.Tensor, path: Path, info: dict[str, Any], name: str
) -> None:
    """Write ``path`` in ``info["format"]`` under a temporary name, renamed once whole; adds the
    ONNX exporter's fields to ``info``."""
    format = info["format"]
    tmp = path.with_name(path.name + ".tmp")
    try:  # before the work: a folder it cannot write is one line at once
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
    except OSError as err:
        raise export_write_error(err, path) from None
    try:
        if format == "safetensors":
            # clone: tied or views of one storage would make safetensors refuse the dict
            state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            header = {k: v for k, v in json_texts(info).items() if k != "format"}
            save_safetensors(state, tmp, metadata={"format": "pt", **header})
        elif format == "torchscript":
            _export_torchscript(model, example, tmp, info)
        else:
            info.update(_export_onnx(model, example, tmp))
            set_onnx_metadata(tmp, json_texts(info))
        os.replace(tmp, path)
    except Exception as err:
        with contextlib.suppress(OSError):  # on a file system gone read-only, unlink fails too
            tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise export_write_error(err, path) from None
        raise RuntimeError(f"exporting {name} to {format} failed: {_first_line(err)}") from err


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise export_write_error(err, path) from None


class ExportWriteError(OSError, ValueError):
    """An export could not be written (read-only, full, no permission); ``str(err)`` is one
    line naming the file. Also a ValueError: the commands report it as one ``error:`` line."""


def export_write_error(err: OSError, path: str | os.PathLike) -> ExportWriteError:
    """One line for ``err``, raised while writing the export ``path`` (named, not the temporary
    file or the folder the error may name)."""
    where = os.fspath(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return ExportWriteError(f"no space left on device while writing {where}")
    return ExportWriteError(f"cannot write {where}: {err.strerror or err}")


def _check_same(name: str, got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    if got.shape != expected.shape or not torch.allclose(
        got, expected, atol=_TOLERANCE, rtol=_TOLERANCE
    ):
        diff = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
        raise RuntimeError(f"{name} differs from the model {what} (max |diff| {diff})")


def _export_torchscript(
    model: nn.Module, example: torch.Tensor, path: Path, info: dict[str, Any]
) -> None:
    # Tracing, not scripting: timm models are not all scriptable, all are traceable.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notices
        traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False).eval())
        other = _images(3, example.shape[-1], seed=1)  # another batch size than the trace's
        _check_same("the traced module", traced(other), model(other), "at batch 3")
        torch.jit.save(traced, os.fspath(path), _extra_files={TORCHSCRIPT_META: json.dumps(info)})


def _export_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Dynamo exporter with dynamic batch, H and W; then batch only; then the same two with the
    TorchScript-based exporter, each checked with onnxruntime (when installed).

    Returns the sidecar fields ``dynamic_size``, ``onnx_exporter`` and ``opset``.
    """
    size = example.shape[-1]
    attempts = [("dynamo", True), ("dynamo", False), ("torchscript", True), ("torchscript", False)]
    errors = []
    for exporter, dynamic_size in attempts:
        try:
            path.unlink(missing_ok=True)
            opset = onnx_export(model, example, path, exporter, dynamic_size)
            session = onnx_session(path)
            if session is not None:  # without onnxruntime the exporter's shapes are trusted
                checks = [(3, size)] + ([(1, max(8, size // 2))] if dynamic_size else [])
                for batch, side in checks:
                    x = _images(batch, side, seed=batch)
                    with torch.no_grad():
                        expected = model(x)
                    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
                    _check_same("the ONNX graph", got, expected, f"at batch {batch}, {side} px")
            return {"dynamic_size": dynamic_size, "onnx_exporter": exporter, "opset": opset}
        except Exception as err:  # try the next, more conservative, export
            errors.append(f"{exporter}{'' if dynamic_size else ' (batch axis only)'}: ")
            errors[-1] += _first_line(err)
    path.unlink(missing_ok=True)
    raise RuntimeError("; ".join(errors))
