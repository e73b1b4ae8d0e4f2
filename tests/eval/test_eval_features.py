"""Loading a checkpoint's backbone (prefixes, strictness), feature extraction order and cache,
and the ``unimix knn`` command end to end on a tiny fake checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from unimix.backbones import create_dino_backbone
from unimix.cli import main as unimix_main
from unimix.eval import calibrate_batchnorm, eval_transform, extract_features, load_backbone

BACKBONE = "poolformer_nano"


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: the CPU is shared with other jobs, where tiny models run faster single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fake_checkpoint(
    root: Path, prefix: str = "", step: int = 7, model: torch.nn.Module | None = None
) -> tuple[Path, torch.nn.Module]:
    """A checkpoint dir as the trainer writes it, with keys saved under ``prefix``."""
    if model is None:
        torch.manual_seed(step)
        model = create_dino_backbone(BACKBONE).eval()
    ckpt = root / "checkpoints" / f"step_{step:08d}"
    ckpt.mkdir(parents=True)
    state = {prefix + k: v.contiguous() for k, v in model.state_dict().items()}
    for which in ("teacher", "student"):
        save_file(state, str(ckpt / f"{which}_backbone.safetensors"))
    meta = {
        "backbone": BACKBONE,
        "backbone_kwargs": {},
        "num_features": model.num_features,
        "image_size": 16,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "step": step,
    }
    (ckpt / "backbone.json").write_text(json.dumps(meta))
    files = {  # the manifest that marks a complete checkpoint (see unimix.checkpoint)
        f.name: {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        for f in ckpt.iterdir()
    }
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": step, "files": files}))
    return ckpt, model


@pytest.fixture(scope="module")
def reference() -> torch.nn.Module:
    torch.manual_seed(3)
    return create_dino_backbone(BACKBONE).eval()


@pytest.mark.parametrize("prefix", ["", "module.", "module.backbone.", "_orig_mod."])
def test_load_backbone_strips_wrapper_prefixes(
    tmp_path: Path, prefix: str, reference: torch.nn.Module
) -> None:
    ckpt, _ = _fake_checkpoint(tmp_path, prefix, model=reference)
    model, meta = load_backbone(ckpt)
    expected = reference.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    assert meta["num_features"] == reference.num_features and not model.training
    assert meta["source"].endswith("teacher_backbone.safetensors")


def test_load_backbone_paths_and_features(tmp_path: Path, reference: torch.nn.Module) -> None:
    ckpt, _ = _fake_checkpoint(tmp_path, "module.", model=reference)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = reference(x)
    # a *.safetensors path with backbone.json beside it, and the run's output directory
    for path, which in ((ckpt / "student_backbone.safetensors", "teacher"), (tmp_path, "student")):
        model, meta = load_backbone(path, which)
        with torch.no_grad():
            torch.testing.assert_close(model(x), want)
    assert meta["source"].endswith("student_backbone.safetensors")


def test_mismatched_keys_are_listed_in_one_line(tmp_path: Path) -> None:
    ckpt, model = _fake_checkpoint(tmp_path)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("stages.3")}
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(ckpt / "teacher_backbone.safetensors"))
    with pytest.raises(
        ValueError, match=r"missing \d+: stages\.3.*unexpected 1: extra\.weight"
    ) as e:
        load_backbone(ckpt)
    assert "\n" not in str(e.value) and "teacher_backbone.safetensors" in str(e.value)
    # a full DINO model file (backbone + head) names the file to use instead
    full = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    full["head.mlp.0.weight"] = torch.zeros(2, 2)
    save_file(full, str(ckpt / "teacher_backbone.safetensors"))
    with pytest.raises(ValueError, match=r"1 head\.\* keys\); give the teacher_backbone"):
        load_backbone(ckpt)


def test_bad_paths_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        load_backbone(tmp_path / "nope")
    ckpt, _ = _fake_checkpoint(tmp_path)
    (ckpt / "teacher_backbone.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="teacher_backbone.safetensors: not a readable"):
        load_backbone(ckpt)
    with pytest.raises(ValueError, match="which"):
        load_backbone(ckpt, which="ema")


class _Indexed(torch.utils.data.Dataset):
    """Item i: an image whose every pixel is i (so features reveal the order), label i % 3."""

    def __len__(self) -> int:
        return 11

    def __getitem__(self, i: int):
        return torch.full((3, 4, 4), float(i)), i % 3


class _Counting(torch.nn.Module):
    """Pool to 4×4, flatten, linear; counting the images it has seen (so a cache hit is visible)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(48, 2)
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.linear(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1))


def test_extract_features_keeps_order(tmp_path: Path) -> None:
    model = _Counting().train()
    feats, labels = extract_features(model, _Indexed(), batch_size=4, progress=False)
    assert feats.shape == (11, 2) and feats.dtype == torch.float32
    assert labels.tolist() == [i % 3 for i in range(11)] and labels.dtype == torch.int64
    with torch.no_grad():
        expected = torch.stack([model.linear(torch.full((48,), float(i))) for i in range(11)])
    torch.testing.assert_close(feats, expected)
    assert model.training  # restored
    # usable in autograd afterwards (no inference tensors)
    torch.nn.Linear(2, 1)(feats).sum().backward()


def test_extract_features_cache(tmp_path: Path) -> None:
    from unimix.data import build_dataset

    def data(size: int = 16):
        return build_dataset(
            "synthetic",
            "test",
            num_samples=12,
            image_size=16,
            transform=eval_transform(size, (0.5,) * 3, (0.25,) * 3),
        )

    model, cache = _Counting(), tmp_path / "cache"
    first = extract_features(model, data(), batch_size=5, progress=False, cache_dir=cache)
    assert model.seen == 12 and len(list(cache.iterdir())) == 1
    # a new dataset object with the same content: a hit, identical tensors, the model not run
    again = extract_features(model, data(), batch_size=5, progress=False, cache_dir=cache)
    assert model.seen == 12
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    # a subset, another transform, other weights: each its own entry
    subset = torch.utils.data.Subset(data(), [0, 3, 5])
    part = extract_features(model, subset, progress=False, cache_dir=cache)
    torch.testing.assert_close(part[0], first[0][[0, 3, 5]])
    with torch.no_grad():
        model.linear.weight.mul_(2)
    extract_features(model, data(), progress=False, cache_dir=cache)
    extract_features(model, data(12), progress=False, cache_dir=cache)
    assert len(list(cache.iterdir())) == 4 and model.seen == 12 + 3 + 12 + 12


def test_extract_features_under_accelerate() -> None:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    accelerator = Accelerator(cpu=True)
    try:
        feats, labels = extract_features(
            _Counting(), _Indexed(), batch_size=4, accelerator=accelerator, progress=False
        )
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert feats.shape == (11, 2) and labels.tolist() == [i % 3 for i in range(11)]


def test_eval_transform_shapes_and_values() -> None:
    import numpy as np
    from PIL import Image

    image = Image.fromarray(np.full((40, 50, 3), 51, dtype=np.uint8))  # 51/255 = 0.2
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    expected = torch.tensor([(0.2 - m) / s for m, s in zip(mean, std, strict=True)])
    for size in (32, 96):
        x = eval_transform(size, mean, std)(image)
        assert x.shape == (3, size, size) and x.dtype == torch.float32
        torch.testing.assert_close(x, expected[:, None, None].expand_as(x))
    # above 64 px: shorter side to floor(size / 0.875) (timm's rule), then the centre crop (a
    # column pattern shows it): 109 = floor(96 / 0.875), no resize, left edge round(13 / 2) = 6
    ramp = np.tile(np.arange(109, dtype=np.uint8)[None, :, None], (109, 1, 3))
    x = eval_transform(96, (0, 0, 0), (1, 1, 1))(Image.fromarray(ramp))
    torch.testing.assert_close(x[0, 0], torch.arange(6, 102, dtype=torch.float32) / 255)


def test_knn_command_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reference: torch.nn.Module
) -> None:
    from unimix.eval import export_extractor

    _fake_checkpoint(tmp_path / "run", model=reference)
    out, cache = tmp_path / "knn.json", tmp_path / "cache"
    argv = ["knn", str(tmp_path / "run"), "--data", "synthetic", "--limit-train", "120"]
    argv += ["--limit-test", "30", "--k", "5", "20", "500", "--no-progress"]
    argv += ["--cache-dir", str(cache), "--out", str(out)]
    assert unimix_main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(out.read_text())
    assert report["bank"] == 120 and report["queries"] == 30 and report["image_size"] == 16
    assert set(report["top1"]) == {"5", "20"} and "top-1" in captured.out
    assert "skipping k=[500]" in captured.err
    assert 0 <= report["top1"]["20"] <= report["top5"]["20"] <= 100
    assert len(list(cache.iterdir())) == 2  # train and test features
    # an exported extractor is accepted as the model, and gives the same numbers
    meta = json.loads(next((tmp_path / "run").glob("checkpoints/*/backbone.json")).read_text())
    extractor = export_extractor(reference, meta, tmp_path / "extractor", "safetensors")
    argv[1], argv[-1] = str(extractor), str(tmp_path / "knn2.json")
    assert unimix_main(argv) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "knn2.json").read_text())["top1"] == report["top1"]
    # bad input: one line on stderr, exit code 2
    assert unimix_main(["knn", str(tmp_path / "missing"), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_linear_and_export_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], reference: torch.nn.Module
) -> None:
    _fake_checkpoint(tmp_path / "run", model=reference)
    out = tmp_path / "linear.json"
    argv = ["linear", str(tmp_path / "run"), "--data", "synthetic", "--limit-train", "100"]
    argv += ["--limit-test", "20", "--epochs", "2", "--lrs", "0.1", "0.01", "--no-progress"]
    assert unimix_main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["best_lr"] in (0.1, 0.01) and 0 <= report["test_top1"] <= 100
    assert "top-1" in capsys.readouterr().out
    exported = tmp_path / "extractor.pt"
    argv = ["export", str(tmp_path / "run"), "--format", "torchscript", "--output", str(exported)]
    assert unimix_main(argv) == 0
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(exported))(x), reference(x))
    assert "wrote" in capsys.readouterr().out
    argv = ["export", str(tmp_path / "run"), "--format", "bmp", "--output", str(exported)]
    with pytest.raises(SystemExit) as exit_info:  # argparse rejects the choice itself
        unimix_main(argv)
    assert exit_info.value.code == 2


def test_calibrate_batchnorm_sets_statistics_from_the_chosen_images() -> None:
    # reference: the mean and unbiased variance of the BN input over exactly the chosen images
    torch.manual_seed(0)
    images = torch.randn(40, 3, 6, 6) * 3 + 2
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(40, dtype=torch.long))
    conv = torch.nn.Conv2d(3, 4, 3)
    bn = torch.nn.BatchNorm2d(4)
    model = torch.nn.Sequential(conv, bn, torch.nn.ReLU()).eval()
    assert calibrate_batchnorm(model, dataset, 25, seed=3) == 25
    picked = torch.randperm(40, generator=torch.Generator().manual_seed(3))[:25]
    with torch.no_grad():
        x = conv(images[picked]).transpose(0, 1).flatten(1)  # [C, N·H·W]
    torch.testing.assert_close(bn.running_mean, x.mean(1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bn.running_var, x.var(1), rtol=1e-4, atol=1e-4)
    assert not model.training
    # a BatchNorm network without any parameters (the device comes from its buffers)
    plain = torch.nn.BatchNorm2d(3, affine=False)
    assert calibrate_batchnorm(plain, dataset, 25, seed=3) == 25
    pixels = images[picked].transpose(0, 1).flatten(1)
    torch.testing.assert_close(plain.running_mean, pixels.mean(1), rtol=1e-4, atol=1e-4)
    # networks without BatchNorm are left alone
    gn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GroupNorm(1, 4))
    assert calibrate_batchnorm(gn, dataset, 25) == 0
