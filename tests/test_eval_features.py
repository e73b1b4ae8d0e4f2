"""Loading a checkpoint's backbone (prefixes, strictness), feature extraction order and cache,
and the ``unimix knn`` command end to end on a tiny fake checkpoint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from unimix.cli import main as unimix_main
from unimix.eval import eval_transform, extract_features, load_backbone
from unimix.ssl.model import create_dino_backbone

BACKBONE = "poolformer_nano"


def _fake_checkpoint(root: Path, prefix: str = "", step: int = 7) -> tuple[Path, torch.nn.Module]:
    """A checkpoint dir as the trainer writes it, with keys saved under ``prefix``."""
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
    files = {  # the manifest that marks a complete checkpoint (see unimix.ssl.checkpoint)
        f.name: {"bytes": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
        for f in ckpt.iterdir()
    }
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": step, "files": files}))
    return ckpt, model


@pytest.mark.parametrize("prefix", ["", "module.", "module.backbone.", "_orig_mod."])
def test_load_backbone_strips_wrapper_prefixes(tmp_path: Path, prefix: str) -> None:
    ckpt, reference = _fake_checkpoint(tmp_path, prefix)
    model, meta = load_backbone(ckpt)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(model(x), reference(x))
    assert meta["num_features"] == reference.num_features and not model.training
    # a *.safetensors path with backbone.json beside it works too
    model2, _ = load_backbone(ckpt / "student_backbone.safetensors")
    torch.testing.assert_close(model2(x), reference(x))


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


def test_extract_features_keeps_order_and_caches(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    model(torch.zeros(1, 48))  # materialise
    model.train()
    feats, labels = extract_features(model, _Indexed(), batch_size=4, progress=False)
    assert feats.shape == (11, 2) and labels.tolist() == [i % 3 for i in range(11)]
    expected = torch.stack([model(torch.full((1, 3, 4, 4), float(i)))[0] for i in range(11)])
    torch.testing.assert_close(feats, expected.detach())
    assert model.training  # restored
    cached = extract_features(
        model, _Indexed(), batch_size=4, progress=False, cache_dir=tmp_path / "cache"
    )
    assert len(list((tmp_path / "cache").iterdir())) == 1
    with torch.no_grad():
        model[1].weight.zero_()  # another model: another cache key, fresh features
    again = extract_features(model, _Indexed(), progress=False, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2 and not torch.equal(again[0], cached[0])


def test_eval_transform_shapes() -> None:
    import numpy as np

    image = np.zeros((40, 50, 3), dtype=np.uint8)
    assert eval_transform(32, (0.5,) * 3, (0.5,) * 3)(image).shape == (3, 32, 32)
    assert eval_transform(96, (0.5,) * 3, (0.5,) * 3)(image).shape == (3, 96, 96)


def test_knn_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_checkpoint(tmp_path / "run")
    out = tmp_path / "knn.json"
    argv = ["knn", str(tmp_path / "run"), "--data", "synthetic", "--limit-train", "200"]
    argv += ["--limit-test", "50", "--k", "5", "20", "--out", str(out), "--no-progress"]
    assert unimix_main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["bank"] == 200 and report["queries"] == 50 and report["image_size"] == 16
    assert set(report["top1"]) == {"5", "20"} and "top-1" in printed
    assert 0 <= report["top1"]["20"] <= 100 <= report["top5"]["20"] + 100
    # bad input: one line on stderr, exit code 2
    assert unimix_main(["knn", str(tmp_path / "missing"), "--data", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
