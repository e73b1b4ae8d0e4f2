"""Export round trip: each format's features equal the model's to 1e-5, TorchScript and ONNX
load without unimix, two formats side by side keep their own sidecars, and bad models or files
give one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from unimix.eval import export_extractor, load_extractor
from unimix.eval.export import sidecar_path

FORMATS = ["safetensors", "torchscript", "onnx"]
META = {"backbone": "resnet10t", "image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Single-threaded: on the shared, oversubscribed CPU, two spinning OpenMP threads make
    these many small ops up to 100x slower (measured 0.07 s vs 10 s for one probe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _onnxruntime_missing() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:  # the export extra could not be installed on this platform
        return f"onnxruntime is not installed ({err})"
    return None


def _skip_without_runtime(fmt: str) -> None:
    if fmt == "onnx" and (reason := _onnxruntime_missing()):
        pytest.skip(reason)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = timm.create_model("resnet10t", num_classes=0, pretrained=False)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode matters
        for module in m.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, model: torch.nn.Module) -> dict[str, Path]:
    """All three formats written with the same stem into one folder (exported once)."""
    folder = tmp_path_factory.mktemp("export")
    return {
        fmt: export_extractor(model, META, folder / "extractor", fmt)
        for fmt in FORMATS
        if not (fmt == "onnx" and _onnxruntime_missing())
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_matches_the_model(
    exported: dict[str, Path], model: torch.nn.Module, fmt: str
) -> None:
    _skip_without_runtime(fmt)
    path = exported[fmt]
    assert path.name == "extractor" + {"safetensors": ".safetensors", "torchscript": ".pt"}.get(
        fmt, ".onnx"
    )
    side = json.loads(sidecar_path(path).read_text())  # each format keeps its own sidecar
    assert side["format"] == fmt and side["num_features"] == model.num_features == 512
    assert side["image_size"] == 32 and side["mean"] == [0.5] * 3 and side["std"] == [0.25] * 3
    assert side["backbone"] == "resnet10t" and side["unimix_version"]
    loaded = load_extractor(path)
    assert loaded.meta == side
    sizes = [32] + ([16] if side["dynamic_size"] else [])
    assert fmt == "torchscript" or sizes == [32, 16]  # resnet10t takes any size
    for size in sizes:
        x = torch.randn(3, 3, size, size)  # another batch size than the export's example
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)


_NO_UNIMIX = """
import json, sys
import numpy as np
path, fmt, x_file, y_file = sys.argv[1:]
meta = json.load(open(path + ".json"))
x = np.load(x_file)
assert x.shape[-1] == meta["image_size"]
if fmt == "torchscript":
    import torch
    with torch.no_grad():
        out = torch.jit.load(path)(torch.from_numpy(x)).numpy()
else:
    import onnxruntime as ort
    out = ort.InferenceSession(path).run(None, {meta["input_name"]: x})[0]
assert out.shape == (x.shape[0], meta["num_features"])
assert "unimix" not in sys.modules, "unimix was imported"
np.save(y_file, out)
"""


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_loads_without_unimix(
    tmp_path: Path, exported: dict[str, Path], model: torch.nn.Module, fmt: str
) -> None:
    _skip_without_runtime(fmt)
    x = torch.randn(2, 3, 32, 32)
    np.save(tmp_path / "x.npy", x.numpy())
    subprocess.run(
        [sys.executable, "-c", _NO_UNIMIX, str(exported[fmt]), fmt, "x.npy", "y.npy"],
        check=True,
        cwd=tmp_path,  # not the repository root, whose folder is the unimix package
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(
        torch.from_numpy(np.load(tmp_path / "y.npy")), expected, atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_files_give_one_line_errors(
    tmp_path: Path, exported: dict[str, Path], fmt: str
) -> None:
    _skip_without_runtime(fmt)
    bad = tmp_path / exported[fmt].name
    bad.write_bytes(b"\x00garbage, not a model")
    shutil.copy(sidecar_path(exported[fmt]), sidecar_path(bad))
    with pytest.raises(ValueError, match=f"{bad.name}: cannot load this {fmt}") as info:
        load_extractor(bad)
    assert "\n" not in str(info.value)


def test_bad_sidecars_and_arguments(
    tmp_path: Path, exported: dict[str, Path], model: torch.nn.Module
) -> None:
    path = tmp_path / "m.pt"
    shutil.copy(exported["torchscript"], path)
    assert load_extractor(path).meta["image_size"] == 32  # no sidecar: the file's own metadata
    foreign = tmp_path / "foreign.pt"  # a TorchScript file unimix did not write
    torch.jit.save(torch.jit.trace(torch.nn.Flatten(), torch.zeros(1, 3)), str(foreign))
    with pytest.raises(FileNotFoundError, match=r"foreign\.pt\.json: missing"):
        load_extractor(foreign)
    sidecar_path(path).write_text("{not json")
    with pytest.raises(ValueError, match=r"m\.pt\.json: not valid JSON"):
        load_extractor(path)
    sidecar_path(path).write_text(json.dumps({"format": "onnx"}))
    with pytest.raises(ValueError, match="format 'onnx' does not match the file m.pt"):
        load_extractor(path)
    with pytest.raises(FileNotFoundError, match="no such exported extractor"):
        load_extractor(tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="format: expected one of"):
        export_extractor(model, META, tmp_path / "x", "pickle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x\.onnx: torchscript exports must end in \.pt"):
        export_extractor(model, META, tmp_path / "x.onnx", "torchscript")
    with pytest.raises(ValueError, match="meta\\['backbone'\\]"):
        export_extractor(model, {"image_size": 32}, tmp_path / "x", "safetensors")
    # a folder receives extractor.<suffix>
    assert export_extractor(model, META, tmp_path, "safetensors") == (
        tmp_path / "extractor.safetensors"
    )
    # a path ending in a separator is a folder, created when missing: never new.safetensors
    new = str(tmp_path / "new") + os.sep
    assert export_extractor(model, META, new, "safetensors") == (
        tmp_path / "new" / "extractor.safetensors"
    )
    assert not (tmp_path / "new.safetensors").exists()


def test_sidecar_source_is_run_relative_never_absolute(
    tmp_path: Path, model: torch.nn.Module
) -> None:
    weights = tmp_path / "run" / "checkpoints" / "step_00000003" / "teacher_backbone.safetensors"
    cases = [
        (weights, "checkpoints/step_00000003/teacher_backbone.safetensors"),
        (tmp_path / "elsewhere" / "w.safetensors", "w.safetensors"),
    ]
    for source, expected in cases:
        meta = {**META, "source": str(source)}
        side = json.loads(
            sidecar_path(export_extractor(model, meta, tmp_path, "safetensors")).read_text()
        )
        assert side["source"] == expected
        texts = [v for v in side.values() if isinstance(v, str)]
        assert not [v for v in texts if v.startswith("/") or str(tmp_path) in v]


class _BatchDependent(torch.nn.Module):
    """Python control flow on the batch size: a trace silently bakes in one branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean((2, 3))
        return pooled if x.shape[0] == 2 else -pooled


class _WithHead(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # [B, 3, H, W]: not a feature extractor


def test_models_that_cannot_be_exported_name_model_and_format(tmp_path: Path) -> None:
    meta = {"image_size": 16}
    with pytest.raises(RuntimeError, match="exporting _BatchDependent to torchscript failed") as e:
        export_extractor(_BatchDependent(), meta, tmp_path / "b", "torchscript")
    assert "\n" not in str(e.value) and "at batch 3" in str(e.value)
    assert not (tmp_path / "b.pt").exists() and not (tmp_path / "b.pt.tmp").exists()
    with pytest.raises(ValueError, match=r"_WithHead: expected features \[B, D\]"):
        export_extractor(_WithHead(), meta, tmp_path / "h", "torchscript")


def test_acmix_traces_to_torchscript_at_any_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ACmix's window attention is a custom autograd Function; tracing must record plain ops
    and must not bake the trace's batch into its chunking (tiny chunks force several)."""
    from unimix.backbones import create_backbone
    from unimix.backbones.mixers import acmix

    monkeypatch.setattr(acmix, "_CHUNK_ELEMENTS", 1)
    torch.manual_seed(0)
    model = create_backbone("acmix_nano", num_classes=0).eval()
    with torch.no_grad():  # timm zero-inits each block's last BN: make the mixers count
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
    path = export_extractor(
        model, {"backbone": "acmix_nano", "image_size": 32}, tmp_path, "torchscript"
    )
    loaded = load_extractor(path)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)
