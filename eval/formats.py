"""The formats of an exported feature extractor and their file suffixes. Kept apart from
:mod:`unimix.eval.export` so that ``unimix export --help`` lists them without importing torch."""

from __future__ import annotations

__all__ = ["FORMATS"]

#: format -> suffix of the model file.
FORMATS: dict[str, str] = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}
