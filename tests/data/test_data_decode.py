"""unimix.data.decode: every image mode becomes RGB with the right colours; EXIF orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from unimix.data import load_rgb


def _write(path: Path, image: Image.Image, **save_args: object) -> Path:
    image.save(path, **save_args)
    return path


def test_every_image_mode_becomes_rgb_with_the_right_colours(tmp_path: Path) -> None:
    palette = [0, 0, 0, 10, 200, 30] + [0] * (256 * 3 - 6)
    paletted = Image.new("P", (2, 1))
    paletted.putpalette(palette)
    paletted.putpixel((1, 0), 1)  # pixel 0 → index 0 (black), pixel 1 → index 1
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)])
    la = Image.new("LA", (2, 1))
    la.putdata([(100, 0), (100, 255)])
    cases = {
        # file: (expected RGB pixels row, left to right)
        _write(tmp_path / "gray.png", Image.new("L", (1, 1), 77)): [(77, 77, 77)],
        _write(tmp_path / "bilevel.png", Image.new("1", (1, 1), 1)): [(255, 255, 255)],
        _write(tmp_path / "palette.png", paletted): [(0, 0, 0), (10, 200, 30)],
        # index 0 transparent → composited over white
        _write(tmp_path / "palette_t.png", paletted, transparency=0): [
            (255, 255, 255),
            (10, 200, 30),
        ],
        # transparent red → white; opaque blue stays; black at alpha 128/255 over white → 127
        _write(tmp_path / "rgba.png", rgba): [(255, 255, 255), (0, 0, 255), (127, 127, 127)],
        _write(tmp_path / "la.png", la): [(255, 255, 255), (100, 100, 100)],
        # naive CMYK: R = 255 - C etc. (PIL's formula without colour management)
        _write(tmp_path / "cmyk.tif", Image.new("CMYK", (1, 1), (255, 0, 0, 0))): [(0, 255, 255)],
        # 16-bit: 65535 → 255 (PIL's own convert would clip 257 and 32896 to 255 as well)
        _write(
            tmp_path / "gray16.png",
            Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.uint16)),
        ): [(v, v, v) for v in (0, 1, 128, 255)],
        _write(
            tmp_path / "gray32.tif",
            Image.fromarray(np.array([[0, 257, 32896, 65535]], dtype=np.int32)),
        ): [(v, v, v) for v in (0, 1, 128, 255)],
        _write(
            tmp_path / "float.tif",
            Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)),
        ): [(v, v, v) for v in (0, 128, 255)],
    }
    modes = {path.name: Image.open(path).mode for path in cases}
    assert modes["gray16.png"].startswith("I;16") and modes["cmyk.tif"] == "CMYK", modes
    for path, expected in cases.items():
        image = load_rgb(path)
        assert image.mode == "RGB", path.name
        assert [tuple(p) for p in np.asarray(image)[0].tolist()] == expected, path.name


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (4, 2), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_rgb(tmp_path / "rotated.jpg").size == (2, 4)
