"""unimix.data.dataset_options: what each kind of dataset takes from a run's settings."""

from __future__ import annotations

from pathlib import Path

from unimix.data import dataset_options, is_generated


def test_synthetic_takes_its_generation_settings_only() -> None:
    options = dataset_options(
        "Synthetic", root="/data", num_samples=40, image_size=16, seed=3, cache=True
    )
    assert options == {"num_samples": 40, "image_size": 16, "seed": 3}
    assert dataset_options("synthetic", image_size=None) == {}  # None is left out
    assert is_generated("SYNTHETIC") and not is_generated("cifar10")


def test_named_sets_take_a_root_and_folders_may_cache(tmp_path: Path) -> None:
    assert dataset_options("cifar10", root="/data", image_size=32, cache=True) == {"root": "/data"}
    assert dataset_options("cifar10") == {}
    assert dataset_options(tmp_path, cache=True) == {"cache": True}
    assert dataset_options(str(tmp_path), num_samples=5) == {}
