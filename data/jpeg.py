"""JPEG files read as bytes in a loader worker and decoded in batches on the training device.

:func:`read_jpeg` keeps a file's bytes with the size and EXIF orientation its header gives
(PIL parses the header only); :func:`decode_jpegs` decodes many at once with torchvision's
``decode_jpeg`` (nvJPEG on a GPU, libjpeg-turbo on the CPU) and applies the orientation as
:func:`~unimix.data.decode.load_rgb` does. Files ``decode_jpeg`` does not handle (not a JPEG,
CMYK) are left to :func:`~unimix.data.decode.load_rgb` by returning None.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .decode import load_rgb

__all__ = ["EncodedJPEG", "decode_jpegs", "read_jpeg"]

_EXIF_ORIENTATION = 0x0112


@dataclass
class EncodedJPEG:
    """A JPEG file's bytes (``data``: uint8 ``[nbytes]``) and the ``height`` × ``width`` of the
    image once its EXIF ``orientation`` (1–8) is applied."""

    data: torch.Tensor
    height: int
    width: int
    orientation: int
    path: str


def read_jpeg(path: str | os.PathLike[str]) -> EncodedJPEG | None:
    """``path``'s bytes when it is an 8-bit grayscale or colour JPEG, else None (and for a file
    whose header cannot be read: the caller decodes it the usual way, which reports it)."""
    try:
        with Image.open(path) as image:
            if image.format != "JPEG" or image.mode not in ("L", "RGB"):
                return None
            width, height = image.size
            orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # the usual decoder names the file and the reason
        return None
    if orientation in (5, 6, 7, 8):  # a quarter turn: the displayed image is transposed
        width, height = height, width
    data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    return EncodedJPEG(data, height, width, orientation if 1 <= orientation <= 8 else 1, str(path))


def _orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """``[H, W, 3]`` as displayed under EXIF ``orientation`` (PIL's ``exif_transpose``)."""
    if orientation in (2, 3):  # mirrored, or turned half way
        image = image.flip(1)
    if orientation in (3, 4):
        image = image.flip(0)
    if orientation in (5, 6, 7, 8):
        image = image.transpose(0, 1)
        if orientation in (6, 7):
            image = image.flip(1)
        if orientation in (7, 8):
            image = image.flip(0)
    return image


def decode_jpegs(files: Sequence[EncodedJPEG], device: torch.device | str) -> list[torch.Tensor]:
    """``[H, W, 3]`` uint8 images of ``files`` on ``device``, decoded in one batch.

    When the batch decoder refuses one file, each is decoded alone, and one that the JPEG
    decoder refuses is decoded by PIL on the CPU.

    Raises:
        UnreadableImageError: a file no decoder reads (the message names it).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    device = torch.device(device)
    try:
        with _quiet_torchvision():
            decoded = decode_jpeg([f.data for f in files], mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return [_decode_one(f, device) for f in files]
    return [_orient(x.permute(1, 2, 0), f.orientation) for x, f in zip(decoded, files, strict=True)]


def _decode_one(file: EncodedJPEG, device: torch.device) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        with _quiet_torchvision():
            image = decode_jpeg(file.data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # load_rgb applies the orientation itself, or names the file
        return torch.from_numpy(np.asarray(load_rgb(file.path))).to(device)
    return _orient(image.permute(1, 2, 0), file.orientation)


@contextlib.contextmanager
def _quiet_torchvision() -> Iterator[None]:
    # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not a
    # dependency; the warning would repeat on every batch.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        yield
