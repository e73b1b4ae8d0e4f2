"""The image an affinity plot looks at: a file, or a SyntheticShapes test image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.synthetic import SyntheticShapes

__all__ = ["load_image"]


def load_image(
    path: str | None, size: int, index: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Image as a normalised ``[3, size, size]`` tensor: a file, or SyntheticShapes test image
    ``index``."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--image: no such file {path!r}")
        try:
            pil = Image.open(path).convert("RGB")
        except OSError as err:
            raise ValueError(f"--image: cannot read {path!r} as an image ({err})") from None
        pil = pil.resize((size, size), Image.BICUBIC)
    else:
        pil = SyntheticShapes(split="test", num_samples=index + 1, image_size=size)[index][0]
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
