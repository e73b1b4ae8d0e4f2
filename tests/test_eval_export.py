"""Export round trip: each format's features equal the model's to 1e-5, TorchScript and ONNX
load without unimix, and bad files give one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from unimix.eval import export_extractor, load_extractor
from unimix.ssl.model import create_dino_backbone

META = {"backbone": "caformer_nano", "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_dino_backbone(META["backbone"]).eval()


def _onnxruntime_missing() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:  # the export extra could not be installed on this platform
        return f"onnxruntime is not installed ({err})"
    return None


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript", "onnx"])
def test_round_trip_matches_the_model(tmp_path: Path, model: torch.nn.Module, fmt: str) -> None:
    if fmt == "onnx" and (reason := _onnxruntime_missing()):
        pytest.skip(reason)
    path = export_extractor(model, META, tmp_path / "extractor", fmt)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["num_features"] == model.num_features and sidecar["format"] == fmt
    loaded = load_extractor(path)
    x = torch.randn(3, 3, 32, 32)  # another batch size than the export's example
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)
    assert loaded.meta["image_size"] == 32


_NO_UNIMIX = """
import json, sys, numpy as np
path, fmt = sys.argv[1], sys.argv[2]
meta = json.load(open(path.rsplit(".", 1)[0] + ".json"))
x = np.load(sys.argv[3])
if fmt == "torchscript":
    import torch
    out = torch.jit.load(path)(torch.from_numpy(x)).detach().numpy()
else:
    import onnxruntime as ort
    out = ort.InferenceSession(path).run(None, {"images": x})[0]
assert "unimix" not in sys.modules, "unimix was imported"
np.save(sys.argv[4], out)
"""


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_loads_without_unimix(tmp_path: Path, model: torch.nn.Module, fmt: str) -> None:
    if fmt == "onnx" and (reason := _onnxruntime_missing()):
        pytest.skip(reason)
    import numpy as np

    path = export_extractor(model, META, tmp_path / "m", fmt)
    x = torch.randn(2, 3, 32, 32)
    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run(
        [sys.executable, "-c", _NO_UNIMIX, str(path), fmt, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        check=True,
        cwd=tmp_path,  # not the repository root, whose folder is the unimix package
    )  # fmt: skip
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(
        torch.from_numpy(np.load(tmp_path / "y.npy")), expected, atol=1e-5, rtol=1e-5
    )


def test_bad_files_give_one_line_errors(tmp_path: Path, model: torch.nn.Module) -> None:
    path = export_extractor(model, META, tmp_path / "m", "torchscript")
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"m\.pt: cannot load this torchscript") as info:
        load_extractor(path)
    assert "\n" not in str(info.value)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match=r"m\.json: missing"):
        load_extractor(path)
    with pytest.raises(ValueError, match="format"):
        export_extractor(model, META, tmp_path / "x", "pickle")  # type: ignore[arg-type]
