"""The formats of an exported feature extractor, their file suffixes and how their files carry
the sidecar's keys. Kept apart from :mod:`unimix.eval.export` so that ``unimix export --help``
lists them without importing torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "TORCHSCRIPT_META", "from_json_texts", "json_texts", "sidecar_path"]

#: format -> suffix of the model file.
FORMATS: dict[str, str] = {"safetensors": ".safetensors", "torchscript": ".pt", "onnx": ".onnx"}
#: TorchScript's extra file holding the sidecar's keys.
TORCHSCRIPT_META = "unimix.json"


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON description of an exported file: its full name + ``.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def json_texts(info: dict[str, Any]) -> dict[str, str]:
    """Each key's value as JSON text: what ONNX ``metadata_props`` and safetensors headers hold."""
    return {key: json.dumps(value) for key, value in info.items()}


def from_json_texts(texts: dict[str, str]) -> dict[str, Any]:
    """The inverse of :func:`json_texts`; a value another tool wrote as plain text stays text."""
    meta: dict[str, Any] = {}
    for key, text in texts.items():
        try:
            meta[key] = json.loads(text)
        except ValueError:
            meta[key] = text
    return meta
