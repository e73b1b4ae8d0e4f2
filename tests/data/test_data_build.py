"""unimix.data.build: options of build_dataset."""

from __future__ import annotations

from unimix.data import build_dataset


def test_options_set_to_none_count_as_not_given() -> None:
    dataset = build_dataset("SYNTHETIC", "test", num_samples=20, image_size=16, seed=None)
    assert len(dataset) == 20 and dataset.get_uint8(0).shape == (16, 16, 3)
