"""Decode any image file PIL can open into an 8-bit RGB image, or report why it cannot.

``Image.open(path).convert("RGB")`` is what most loaders do, and it is wrong in three common
cases this module handles: 16-bit images (PIL clips every value above 255 to white instead of
scaling), transparent images (the colour under fully transparent pixels is arbitrary, often
black; we composite over a white background), and EXIF-rotated photos (shown sideways).
PIL's global ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never touched: a truncated file is an error
here, which callers turn into a skip or a raise.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "IMAGE_EXTENSIONS",
    "LargeImageWarning",
    "UnreadableImageError",
    "UnreadableImageWarning",
    "load_rgb",
    "to_rgb",
    "warn_if_large",
]

#: File name suffixes (lower case) treated as images when listing folders.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".tif", ".tiff"}
    | {".webp"}
)

#: Colour that transparent pixels are composited over.
BACKGROUND_RGB: tuple[int, int, int] = (255, 255, 255)

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


class UnreadableImageError(OSError, ValueError):
    """An image file could not be decoded; the message names the file and PIL's reason.

    Also a ``ValueError`` (bad input), so command lines report it as one ``error:`` line with
    exit code 2. Re-raised from a DataLoader worker, torch builds it from a multi-line message
    ("Caught UnreadableImageError in DataLoader worker ... Original Traceback ..."); the message
    is cut back to the original one line, which names the file.
    """

    def __init__(self, message: str = "") -> None:
        if "\n" in message:
            tail = [ln for ln in message.splitlines() if f"{type(self).__name__}: " in ln]
            if tail:
                message = tail[-1].split(f"{type(self).__name__}: ", 1)[1]
        super().__init__(message)


class UnreadableImageWarning(UserWarning):
    """A corrupt or truncated image file was skipped (filter this category to silence it)."""


class LargeImageWarning(UnreadableImageWarning):
    """An image over PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) was decoded
    anyway; shown as one ``warning:`` line naming it (:mod:`unimix.data.skips`)."""


# PIL's own warning for such an image names no file and echoes a source line; warn_if_large
# says the same in one line naming the file. (Above twice the limit PIL raises, and the file
# is unreadable like any other.)
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def warn_if_large(image: Image.Image, name: str) -> None:
    """One :class:`LargeImageWarning` when ``image`` has more pixels than PIL's limit."""
    limit = Image.MAX_IMAGE_PIXELS
    pixels = image.width * image.height
    if limit and pixels > limit:
        warnings.warn(
            f"large image {name}: {image.width}x{image.height} = {pixels} pixels, over PIL's "
            f"decompression-bomb limit of {limit}; decoded anyway (PIL refuses above twice the "
            "limit: raise PIL.Image.MAX_IMAGE_PIXELS for bigger images you trust)",
            LargeImageWarning,
            stacklevel=3,
        )


def _scale_to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Map ``[0, full_scale]`` linearly onto ``[0, 255]`` with rounding (values outside are clipped)."""
    scaled = np.rint(values.astype(np.float64) * (255.0 / full_scale))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _wide_gray_to_l(image: Image.Image) -> Image.Image:
    """16-bit / 32-bit integer / float grayscale → 8-bit ``L``, scaled rather than clipped.

    ``I;16*`` and ``I`` are read as 16-bit data (what 16-bit PNG and TIFF decode to), so 65535
    maps to 255. ``I`` images with values outside ``[0, 65535]`` and ``F`` images outside
    ``[0, 1]`` have no standard range and are min-max scaled per image.
    """
    values = np.asarray(image)
    if values.size == 0:
        return Image.new("L", image.size)
    lo, hi = values.min().item(), values.max().item()
    full_scale = 1.0 if image.mode == "F" else 65535.0
    if lo >= 0 and hi <= full_scale:
        return Image.fromarray(_scale_to_uint8(values, full_scale))
    span = hi - lo if hi > lo else 1.0
    return Image.fromarray(_scale_to_uint8(values - lo, span))


def to_rgb(image: Image.Image) -> Image.Image:
    """Return a new 8-bit RGB copy of ``image`` (any PIL mode), detached from its file.

    - ``L``, ``1``, ``CMYK``, ``YCbCr``, ``RGBX``…: PIL's conversion (CMYK without ICC colour
      management, i.e. the naive formula).
    - ``P``: through its palette; palette transparency is honoured (see below).
    - ``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``: composited over :data:`BACKGROUND_RGB` (white).
    - ``I;16*``, ``I``, ``F``: scaled to 8 bits (65535 → 255), never clipped.
    """
    mode = image.mode
    if mode == "RGB":
        return image.copy()
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return _wide_gray_to_l(image).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND_RGB, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open, fully decode and convert an image file to 8-bit RGB (EXIF orientation applied).

    Multi-frame files (GIF, TIFF) give their first frame.

    Raises:
        UnreadableImageError: the file is missing, not an image, corrupt or truncated; the
            message names the file and the decoder's reason.
    """
    try:
        with Image.open(path) as image:
            warn_if_large(image, os.fspath(path))
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return to_rgb(image)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, zlib/struct errors…
        reason = str(error) or type(error).__name__
        raise UnreadableImageError(f"cannot decode image {os.fspath(path)}: {reason}") from error
