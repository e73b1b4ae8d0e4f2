"""Exports that tell the truth (issue 27, items 2, 3, 4, 7 and 8): timm's transform from an
exported config equals unimix's eval transform at 32, 64, 96 and 224 px (and at 96 px both
resize to floor(96 / 0.875) = 109, checked by hand with PIL); ``in_chans=1`` loads through
timm's own stem adaptation; an hf folder is accepted back by ``unimix knn`` and ``unimix
export``; ONNX, safetensors and TorchScript files carry mean/std/size themselves and load
without their sidecar; the model card quotes the exported network's own k-NN, the trained size,
data paths relative to the run, no "None", and a usage snippet that runs from the export's
parent folder."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from test_eval_features import _fake_checkpoint

import unimix
from unimix.eval import eval_transform, load_extractor
from unimix.eval.export_cli import main as main_export
from unimix.eval.knn_cli import main as main_knn

REPO = Path(__file__).resolve().parents[2]
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]  # what _fake_checkpoint records


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _export_hf(ckpt: Path, out: Path, *args: str) -> Path:
    assert main_export([str(ckpt), "--format", "hf", "--output", str(out), *args]) == 0
    return out


# ------------------------------------------------------------------------------ item 3
@pytest.mark.parametrize("size", [32, 64, 96, 224])
def test_timms_transform_from_the_export_equals_unimix_eval_transform(
    tmp_path: Path, size: int
) -> None:
    ckpt, _ = _fake_checkpoint(tmp_path / "run")
    folder = _export_hf(ckpt, tmp_path / "hf", "--image-size", str(size))
    model = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=0)
    timm_transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    ours = eval_transform(size, MEAN, STD)
    for image in (_image(300, 200, 1), _image(31, 47, 2), _image(size, size, 3)):
        torch.testing.assert_close(timm_transform(image), ours(image), atol=0, rtol=0)


def test_eval_transform_at_96_px_is_resize_to_109_then_centre_crop() -> None:
    # the protocol by hand: shorter side to floor(96 / 0.875) = 109 (bilinear), centre 96 x 96
    image = _image(160, 120, 4)
    short = math.floor(96 / 0.875)
    assert short == 109
    resized = image.resize((round(160 * short / 120), short), Image.BILINEAR)
    left, top = round((resized.width - 96) / 2.0), round((resized.height - 96) / 2.0)
    crop = np.asarray(resized.crop((left, top, left + 96, top + 96)), dtype=np.float32) / 255
    want = (torch.from_numpy(crop).permute(2, 0, 1) - 0.5) / 0.25
    torch.testing.assert_close(eval_transform(96, MEAN, STD)(image), want, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ item 4
def test_grayscale_in_chans_1_loads_through_timms_stem_adaptation(tmp_path: Path) -> None:
    ckpt, trained = _fake_checkpoint(tmp_path / "run")
    folder = _export_hf(ckpt, tmp_path / "hf")
    assert json.loads((folder / "config.json").read_text())["pretrained_cfg"]["first_conv"]
    gray = timm.create_model(f"local-dir:{folder}", pretrained=True, in_chans=1, num_classes=0)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():  # summed RGB filters on one channel = the RGB net on a gray image
        torch.testing.assert_close(
            gray.eval()(x), trained(x.repeat(1, 3, 1, 1)), atol=1e-5, rtol=1e-5
        )


# ------------------------------------------------------------------------------ item 7
def test_an_hf_folder_is_accepted_by_knn_and_export(tmp_path: Path) -> None:
    ckpt, trained = _fake_checkpoint(tmp_path / "run")
    folder = _export_hf(ckpt, tmp_path / "exports" / "tiny")
    knn = [
        "--data",
        "synthetic",
        "--limit-train",
        "40",
        "--limit-test",
        "12",
        "--k",
        "5",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main_knn([str(folder), *knn]) == 0
    (report_file,) = (folder / "eval").glob("knn-*.json")  # default: inside the hf folder
    from_hf = json.loads(report_file.read_text())
    assert main_knn([str(ckpt), *knn, "--out", str(tmp_path / "ckpt.json")]) == 0
    from_ckpt = json.loads((tmp_path / "ckpt.json").read_text())
    assert from_hf["top1"] == from_ckpt["top1"] and from_hf["step"] == 7  # same net, same step

    onnx = tmp_path / "from_hf.onnx"
    assert (
        main_export([str(folder), "--format", "safetensors", "-o", str(onnx.with_suffix(""))]) == 0
    )
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            load_extractor(tmp_path / "from_hf.safetensors")(x), trained(x), atol=1e-5, rtol=1e-5
        )
    again = _export_hf(folder, tmp_path / "again")  # hf -> hf keeps what the first one said
    config = json.loads((again / "config.json").read_text())
    assert config["unimix"]["step"] == 7 and config["unimix"]["backbone"] == "poolformer_nano"


# ------------------------------------------------------------------------------ item 8
@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load's deprecation notice
@pytest.mark.parametrize("fmt", ["onnx", "safetensors", "torchscript"])
def test_exports_carry_their_metadata_and_load_without_the_sidecar(
    tmp_path: Path, fmt: str
) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    ckpt, trained = _fake_checkpoint(tmp_path / "run")
    out = tmp_path / "alone" / "extractor"
    assert main_export([str(ckpt), "--format", fmt, "-o", str(out)]) == 0
    (path,) = [p for p in out.parent.iterdir() if p.suffix != ".json"]
    sidecar = json.loads(path.with_name(path.name + ".json").read_text())
    path.with_name(path.name + ".json").unlink()
    if fmt == "onnx":  # what a user without unimix reads: onnxruntime's metadata map
        import onnxruntime as ort

        props = ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
        inside = {k: json.loads(v) for k, v in props.items()}
    elif fmt == "safetensors":
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata()
        assert header["format"] == "pt"  # what other safetensors loaders expect
        inside = {k: json.loads(v) for k, v in header.items() if k != "format"}
    else:
        files = {"unimix.json": ""}
        torch.jit.load(str(path), _extra_files=files)
        inside = json.loads(files["unimix.json"])
    assert inside["mean"] == MEAN and inside["std"] == STD and inside["image_size"] == 16
    assert {k: v for k, v in inside.items() if k != "format"} == {
        k: v for k, v in sidecar.items() if k != "format"
    }
    model = load_extractor(path)
    assert model.meta["mean"] == MEAN and model.meta["format"] == fmt
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's legacy ONNX exporter
def test_a_foreign_onnx_file_without_sidecar_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    path = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Flatten(), (torch.zeros(1, 3, 4, 4),), str(path), dynamo=False)
    with pytest.raises(FileNotFoundError, match="foreign.onnx.json: missing .* carries no unimix"):
        load_extractor(path)


# ------------------------------------------------------------------------------ item 2
def _write_images(root: Path, per_class: int) -> None:
    for split in ("train", "test"):
        for k, name in enumerate(("circle", "square")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                _image(16, 16, seed=100 * k + i + (0 if split == "train" else 50)).save(
                    folder / f"{i}.png"
                )


TINY = {
    "data": {"batch_size": 8, "num_workers": 0, "mean": MEAN, "std": STD},
    "augment": {"global_size": 16, "local_size": 8, "num_local": 0},
    "model": {
        "backbone": "poolformer_nano",
        "head": {"out_dim": 32, "hidden_dim": 16, "bottleneck_dim": 8},
    },
    "optim": {"warmup_epochs": 0},
    "epochs": 1,
    "max_steps": 2,
    "threads": 1,
    "checkpoint": {"every_steps": 0, "keep_last": 1},
    "logging": {"every_steps": 1, "progress_bar": False},
    "eval": {"knn_at_end": True, "k": 3},
}


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-step run on an image folder named by its absolute path: ROOT/runs/tiny."""
    root = tmp_path_factory.mktemp("card")
    _write_images(root / "src", per_class=8)
    src = str((root / "src").resolve())
    config = {**TINY, "output_dir": "runs/tiny"}
    config["data"] = {**TINY["data"], "dataset": src}
    config["eval"] = {**TINY["eval"], "dataset": src}
    (root / "tiny.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "unimix.cli", "pretrain", "-c", "tiny.yaml"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = root / "runs" / "tiny"
    # distinct numbers for the two networks (a 2-step run scores both alike), as the trainer
    # writes them: the card must quote the exported one's
    knn = json.loads((run / "knn.json").read_text())
    assert knn["step"] == 2 and src in knn["dataset"]
    knn.update(trained=38.7, student=41.6, untrained=21.0)
    (run / "knn.json").write_text(json.dumps(knn))
    return run


def _card(folder: Path) -> str:
    return (folder / "README.md").read_text()


def _detail(card: str, key: str) -> str:
    return re.search(rf"\*\*{key}:\*\* (.*)", card).group(1)


@pytest.mark.slow
def test_the_card_states_the_exported_networks_own_facts(
    folder_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = folder_run.parents[1]
    monkeypatch.chdir(root)
    student = _export_hf(
        Path("runs/tiny"), Path("exports/student/"), "--which", "student", "--image-size", "96"
    )
    teacher = _export_hf(Path("runs/tiny"), Path("exports/teacher"))
    s_card, t_card = _card(student), _card(teacher)
    assert "41.60%" in s_card and "38.70%" not in s_card  # the student's k-NN, not the teacher's
    assert "38.70%" in t_card and "41.60%" not in t_card
    # the trained size, not the export's; data named from the run folder
    assert _detail(s_card, "Pretraining data") == "../../src, at 16 px"
    assert _detail(s_card, "Input size") == "96 px (trained at 16 px)"
    assert _detail(t_card, "Input size") == "16 px"
    assert "../../src test" in t_card  # the k-NN's data, from knn.json's absolute path
    for card in (s_card, t_card):
        assert str(root) not in card and str(root.resolve()) not in card and "None" not in card
    # a report of `unimix knn` on the exported network itself is quoted; one of the other is not
    knn = [
        "--data",
        "synthetic",
        "--limit-train",
        "30",
        "--limit-test",
        "10",
        "--k",
        "5",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main_knn(["runs/tiny", "--which", "student", *knn]) == 0
    report = json.loads(next((folder_run / "eval").glob("knn-student-step2-*.json")).read_text())
    s_card = _card(_export_hf(Path("runs/tiny"), Path("exports/student"), "--which", "student"))
    assert f"on synthetic test: {report['top1']['5']:.2f}%; unimix knn" in s_card
    t_card = _card(_export_hf(Path("runs/tiny"), Path("exports/teacher")))
    assert "unimix knn" not in t_card


@pytest.mark.slow
def test_the_cards_usage_snippet_runs_from_the_exports_parent(folder_run: Path) -> None:
    root = folder_run.parents[1]
    folder = _export_hf(folder_run, root / "exports" / "snippet")
    code = re.search(r"```python\n(.*?)```", _card(folder), re.S).group(1)
    code = code.replace('"path/to/unimix"', repr(str(REPO)))
    prelude = "from PIL import Image\nimage = Image.new('RGB', (40, 30), (90, 20, 200))\n"
    check = "\nprint(tuple(features.shape), type(model).__name__)\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", prelude + code + check],
        capture_output=True,
        text=True,
        cwd=folder.parent,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[-2] == "(1, 256) Backbone"


@pytest.mark.slow
def test_a_python_api_run_card_names_its_data_without_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    images = [_image(16, 16, seed=i) for i in range(32)]
    overrides = [f"{k}={json.dumps(v)}" for k, v in TINY.items() if k not in ("data", "eval")]
    overrides += [
        "data.batch_size=8",
        "data.num_workers=0",
        "eval.knn_at_end=false",
        "output_dir=api_run",
    ]
    unimix.pretrain("quickstart", dataset=images, overrides=overrides)
    card = _card(_export_hf(Path("api_run"), Path("exports/api")))
    assert "None" not in card
    assert "the caller's own images" in _detail(card, "Pretraining data")
