"""Export a frozen feature extractor (images → features) and load it back.

Three formats, each one model file plus a sidecar JSON named after the whole file name
(``extractor.onnx`` → ``extractor.onnx.json``, so two formats exported side by side never share
a sidecar). The sidecar says what a user needs: ``image_size``, ``mean``/``std``,
``num_features``, ``backbone`` preset and ``backbone_kwargs``, ``source`` checkpoint,
``format``, ``unimix_version`` and ``dynamic_size`` (whether other square sizes than
``image_size`` are accepted). The model file carries the same keys itself, each value as JSON
text: ONNX in its ``metadata_props`` (onnxruntime: ``session.get_modelmeta().custom_metadata_map``),
safetensors in its header metadata (``safe_open(path, "pt").metadata()``; ``format`` stays
``"pt"`` there, as loaders expect), TorchScript as the extra file ``unimix.json``; so
:func:`load_extractor` also loads a file whose sidecar was lost.

=============  ==================  ==========================================================
format         file                loads with
=============  ==================  ==========================================================
safetensors    ``*.safetensors``   unimix (``load_extractor``): the preset is rebuilt and the
                                   weights are loaded strictly
torchscript    ``*.pt``            plain torch: ``torch.jit.load(path)``
onnx           ``*.onnx``          onnxruntime: ``InferenceSession(path)``
=============  ==================  ==========================================================

Without unimix (TorchScript, then ONNX)::

    import json, torch
    meta = json.load(open("extractor.pt.json"))
    model = torch.jit.load("extractor.pt")              # images [B, 3, S, S] → [B, D]
    with torch.no_grad():
        features = model(images)                        # S = meta["image_size"]

    import json, onnxruntime as ort
    session = ort.InferenceSession("extractor.onnx")
    props = session.get_modelmeta().custom_metadata_map  # or json.load(the sidecar)
    meta = {key: json.loads(text) for key, text in props.items()}
    features = session.run(None, {"images": images})[0]  # float32 numpy [B, 3, S, S] → [B, D]

Inputs are float32 images scaled to [0, 1] and normalised with ``meta["mean"]``/``meta["std"]``
(what :func:`~unimix.eval.eval_transform` gives); outputs are the backbone's pooled features,
not L2-normalised. The batch axis is dynamic in every format. TorchScript is traced at
``image_size``, so only that size is guaranteed (``dynamic_size`` false); ONNX also has dynamic
height and width when the model allows them (checked at export). ONNX is written by
``torch.onnx.export``'s dynamo exporter (opset 18) and, for a model it cannot handle, by the
older TorchScript-based one (``dynamo=False``, opset 17); the sidecar records which
(``onnx_exporter``). TorchScript is deprecated in recent torch releases but still loads with
plain torch; we export it because users ask for a file that needs nothing else.

An output path that is an existing directory, or ends in a separator (``exports/``: created
when missing), receives ``extractor.<suffix>``; a path without a suffix gets the format's. The
sidecar's ``source`` is run-relative (``checkpoints/step_X/teacher_backbone.safetensors``) or a
bare file name: no sidecar holds an absolute path. Every export is checked before it is
written: its features at another batch size (and, for a dynamic ONNX file, another size) must
equal the model's to 1e-4. Nothing here unpickles: weights go through safetensors, the sidecar
through ``json``, TorchScript through ``torch.jit.load`` and ONNX through onnxruntime.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import nn

from unimix.backbones import create_dino_backbone
from unimix.checkpoint import CHECKPOINTS_DIR, load_strict, save_safetensors

from .formats import FORMATS

__all__ = [
    "FORMATS",
    "ExportWriteError",
    "OnnxExtractor",
    "export_extractor",
    "export_write_error",
    "load_extractor",
    "embedded_meta",
    "portable_source",
    "sidecar_path",
]

Format = Literal["safetensors", "torchscript", "onnx"]
_TOLERANCE = 1e-4  # export-time check; the round-trip tests hold the formats to 1e-5
#: TorchScript's extra file holding the sidecar's keys.
TORCHSCRIPT_META = "unimix.json"


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON description of an exported file: its full name + ``.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


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
    from unimix import __version__

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
        info: dict[str, Any] = {
            "format": format,
            "backbone": meta.get("backbone"),
            "backbone_kwargs": meta.get("backbone_kwargs") or {},
            "num_features": int(reference.shape[1]),
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
                header = {k: v for k, v in _as_json_texts(info).items() if k != "format"}
                save_safetensors(state, tmp, metadata={"format": "pt", **header})
            elif format == "torchscript":
                _export_torchscript(model, example, tmp, info)
            else:
                info.update(_export_onnx(model, example, tmp))
                _set_onnx_metadata(tmp, info)
            os.replace(tmp, path)
        except Exception as err:
            with contextlib.suppress(OSError):  # on a file system gone read-only, unlink fails too
                tmp.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise export_write_error(err, path) from None
            raise RuntimeError(f"exporting {name} to {format} failed: {_first_line(err)}") from err
    finally:
        model.train(was_training)
    side = sidecar_path(path)
    side_tmp = side.with_name(side.name + ".tmp")
    try:
        side_tmp.write_text(json.dumps(info, indent=1))
        os.replace(side_tmp, side)
    except OSError as err:
        with contextlib.suppress(OSError):
            side_tmp.unlink(missing_ok=True)
        raise export_write_error(err, side) from None
    return path


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


def _as_json_texts(info: dict[str, Any]) -> dict[str, str]:
    """Each key's value as JSON text: what ONNX ``metadata_props`` and safetensors headers hold."""
    return {key: json.dumps(value) for key, value in info.items()}


def _from_json_texts(texts: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key, text in texts.items():
        try:
            meta[key] = json.loads(text)
        except ValueError:  # a key another tool wrote as plain text
            meta[key] = text
    return meta


def _set_onnx_metadata(path: Path, info: dict[str, Any]) -> None:
    """Write ``info`` into the ONNX file's ``metadata_props`` (replacing keys of the same name)."""
    import onnx

    graph = onnx.load(os.fspath(path))
    texts = _as_json_texts(info)
    kept = [p for p in graph.metadata_props if p.key not in texts]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, text in texts.items():
        graph.metadata_props.add(key=key, value=text)
    onnx.save(graph, os.fspath(path))


def embedded_meta(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar's keys as the model file itself carries them (ONNX ``metadata_props``, the
    safetensors header, TorchScript's ``unimix.json``); None when the file has none."""
    path = Path(path)
    if path.suffix == FORMATS["onnx"]:
        session = _onnx_session(path)
        texts = dict(session.get_modelmeta().custom_metadata_map) if session else {}
        meta = _from_json_texts(texts)
    elif path.suffix == FORMATS["safetensors"]:
        from safetensors import safe_open

        with safe_open(os.fspath(path), framework="pt") as f:
            meta = _from_json_texts(f.metadata() or {})
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
    """Dynamo exporter with dynamic batch, H and W; then batch only; then the legacy exporter.

    Returns the sidecar fields ``dynamic_size``, ``onnx_exporter`` and ``opset``.
    """
    size = example.shape[-1]
    attempts = [("dynamo", True), ("dynamo", False), ("torchscript", True), ("torchscript", False)]
    errors = []
    for exporter, dynamic_size in attempts:
        try:
            path.unlink(missing_ok=True)
            opset = _onnx_export(model, example, path, exporter, dynamic_size)
            session = _onnx_session(path)
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


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """Silence the exporters' warnings (symbolic-shape solver tracebacks, deprecation notices):
    a failed attempt is reported by our own one-line error, a good one needs no notes."""
    names = [
        n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("torch", "onnxscript")
    ]
    loggers = [logging.getLogger(name) for name in {"torch", "onnxscript", *names}]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _onnx_export(
    model: nn.Module, example: torch.Tensor, path: Path, exporter: str, dynamic_size: bool
) -> int:
    with torch.no_grad(), _quiet_torch_logs():
        if exporter == "dynamo":
            dims = {0: torch.export.Dim.DYNAMIC}
            if dynamic_size:
                dims |= {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
            torch.onnx.export(
                model,
                (example,),
                os.fspath(path),
                input_names=["images"],
                output_names=["features"],
                dynamic_shapes=(dims,),
                opset_version=18,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            return 18
        axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
        torch.onnx.export(
            model,
            (example,),
            os.fspath(path),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": axes, "features": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        return 17


def _onnx_session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


class OnnxExtractor(nn.Module):
    """An onnxruntime session behind ``nn.Module``'s call: ``[B, 3, S, S]`` → ``[B, D]``.

    Runs on onnxruntime's CPU provider; inputs are moved to CPU float32, outputs come back as
    CPU tensors.
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any]) -> None:
        super().__init__()
        import onnxruntime as ort

        self.session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.meta = meta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


def load_extractor(path: str | os.PathLike) -> nn.Module:
    """Load any exported extractor in eval mode; the module has ``.meta`` (the sidecar dict).

    ``model(images [B, 3, S, S])`` → ``[B, meta["num_features"]]``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported extractor")
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{side}: not valid JSON ({_first_line(err)})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{side}: expected a JSON object, got {type(meta).__name__}")
    else:  # the sidecar was lost: the file's own metadata
        try:
            embedded = embedded_meta(path)
        except Exception as err:  # onnxruntime / safetensors / torch.jit: many error types
            raise ValueError(f"{path}: cannot read this extractor ({_first_line(err)})") from None
        if embedded is None:
            raise FileNotFoundError(
                f"{side}: missing (the sidecar JSON describing {path.name}), and {path.name} "
                "carries no unimix metadata of its own"
            )
        meta = embedded
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
