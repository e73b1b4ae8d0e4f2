"""unimix.data.torchvision_sets: a missing torchvision dataset says how to download it."""

from __future__ import annotations

from pathlib import Path

import pytest

from unimix.data import build_dataset


def test_missing_torchvision_dataset_says_how_to_download(tmp_path: Path) -> None:
    for name in ("cifar10", "cifar100", "stl10"):
        with pytest.raises(FileNotFoundError, match=r"--download .*data\.download=true") as info:
            build_dataset(name, "test", root=tmp_path)
        assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError, match="no split 'val'"):
        build_dataset("cifar10", "val", root=tmp_path)
