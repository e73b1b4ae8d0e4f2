"""ONNX files of a feature extractor: written by ``torch.onnx.export`` (the dynamo exporter or the
TorchScript-based one), the sidecar's keys kept in ``metadata_props``, read back through
onnxruntime's CPU provider."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["OnnxExtractor", "onnx_export", "onnx_session", "set_onnx_metadata"]


def onnx_session(path: Path) -> Any:
    """An onnxruntime CPU session of ``path``; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])


def set_onnx_metadata(path: Path, texts: dict[str, str]) -> None:
    """Write ``texts`` (key -> JSON text) into the ONNX file's ``metadata_props``, replacing keys
    of the same name."""
    import onnx

    graph = onnx.load(os.fspath(path))
    kept = [p for p in graph.metadata_props if p.key not in texts]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    for key, text in texts.items():
        graph.metadata_props.add(key=key, value=text)
    onnx.save(graph, os.fspath(path))


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


def onnx_export(
    model: nn.Module, example: torch.Tensor, path: Path, exporter: str, dynamic_size: bool
) -> int:
    """Write ``model`` traced on ``example`` to ``path`` with ``exporter`` (``"dynamo"``: opset
    18, ``"torchscript"``: opset 17); the batch axis is dynamic, H and W too with
    ``dynamic_size``. Returns the opset."""
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
