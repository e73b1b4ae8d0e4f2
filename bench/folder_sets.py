"""Small labeled image folders that differ in character, to test recipes meant for a user's own
folder: ``gray28`` (grayscale CIFAR-10 at 28 px), ``shapes48`` (colour SyntheticShapes at 48 px,
6 classes) and ``glyphs28`` (digits and letters rendered with the machine's fonts, grayscale,
28 px: content whose orientation carries the label). All are ImageFolder trees
(``<out>/<split>/<class>/*.png``) written from data on this machine; nothing is downloaded.
``scripts/make_folder_sets.py`` is its command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "FONT_DIR",
    "GLYPHS",
    "find_fonts",
    "render_glyph",
    "write_glyphs28",
    "write_gray28",
    "write_shapes48",
]

#: Where Debian/Ubuntu's fonts-dejavu-core puts its TrueType files.
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

#: The glyph set's classes: (folder name, character). Digits, the capitals without ``I`` and ``O``
#: (which no font tells apart from ``1`` and ``0`` at 28 px), and ``b d p q``: four lowercase
#: letters that a mirror image or a half turn maps onto one another.
GLYPHS: tuple[tuple[str, str], ...] = (
    *((f"digit_{c}", c) for c in "0123456789"),
    *((f"upper_{c}", c) for c in "ABCDEFGHJKLMNPQRSTUVWXYZ"),
    *((f"lower_{c}", c) for c in "bdpq"),
)
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_SCALE = 4  # glyphs are drawn at 4× and reduced (antialiasing by area averaging)


def write_gray28(cifar10: Path, out: Path, per_class: dict[str, int]) -> None:
    """Grayscale CIFAR-10 at 28 px: the first ``per_class[split]`` images of each class folder of
    ``cifar10/<split>`` → ``out/<split>/<class>/<stem>.png``."""
    for split, count in per_class.items():
        for class_dir in sorted((cifar10 / split).iterdir()):
            target = out / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for file in sorted(class_dir.iterdir())[:count]:
                image = Image.open(file).convert("L").resize((28, 28), Image.BILINEAR)
                image.save(target / f"{file.stem}.png")


def write_shapes48(out: Path, sizes: dict[str, int]) -> None:
    """SyntheticShapes at 48 px, 6 classes, seed 7: ``sizes[split]`` images per split →
    ``out/<split>/<class>/<index>.png``."""
    from ..data import SyntheticShapes

    for split, count in sizes.items():
        data = SyntheticShapes(split, num_samples=count, image_size=48, num_classes=6, seed=7)
        for i, (pixels, label) in enumerate(zip(data.data, data.targets, strict=True)):
            target = out / split / data.classes[label]
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(target / f"{i:05d}.png")


def find_fonts(font_dir: Path = FONT_DIR) -> list[str]:
    """The TrueType files of ``font_dir`` (sorted; the math font, which draws letters in a
    symbol style, left out), then ``"default"``: PIL's embedded font (``load_default``)."""
    files = (
        sorted(p for p in font_dir.glob("*.ttf") if "Math" not in p.name)
        if font_dir.is_dir()
        else []
    )
    return [str(p) for p in files] + ["default"]


def _font(name: str, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return (
        ImageFont.load_default(size=size) if name == "default" else ImageFont.truetype(name, size)
    )


def render_glyph(char: str, font: str, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """``[size, size]`` uint8: ``char`` in ``font`` (a TTF path or ``"default"``), dark ink on
    light paper, with a random glyph height (40–75 % of the side), stroke width (0–2 px at the
    output scale), slant (±8°), position (anywhere the glyph fits, ±3 px around the centre),
    paper and ink levels, and Gaussian pixel noise (σ 0–12 levels). Every draw comes from
    ``rng``."""
    big = size * _SCALE
    height = rng.uniform(0.40, 0.75) * size * _SCALE
    stroke = int(rng.integers(0, 3)) * _SCALE // 2
    font_obj = _font(font, max(8, int(round(height))))
    canvas = Image.new("L", (big * 2, big * 2), 0)
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (big, big), char, fill=255, font=font_obj, anchor="mm", stroke_width=stroke, stroke_fill=255
    )
    canvas = canvas.rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR, center=(big, big))
    box = canvas.getbbox() or (big - 1, big - 1, big + 1, big + 1)
    glyph = canvas.crop(box)
    gw, gh = glyph.size
    if max(gw, gh) > big - 2 * _SCALE:  # keep a 1-px margin at the output scale
        ratio = (big - 2 * _SCALE) / max(gw, gh)
        glyph = glyph.resize((max(1, int(gw * ratio)), max(1, int(gh * ratio))), Image.BILINEAR)
        gw, gh = glyph.size
    jitter = 3 * _SCALE
    x = int(np.clip((big - gw) // 2 + rng.integers(-jitter, jitter + 1), 0, big - gw))
    y = int(np.clip((big - gh) // 2 + rng.integers(-jitter, jitter + 1), 0, big - gh))
    mask = Image.new("L", (big, big), 0)
    mask.paste(glyph, (x, y))
    alpha = np.asarray(mask.resize((size, size), Image.BOX), dtype=np.float32) / 255.0
    paper, ink = rng.uniform(170, 250), rng.uniform(0, 90)
    pixels = paper + (ink - paper) * alpha + rng.normal(0, rng.uniform(0, 12), alpha.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def write_glyphs28(
    out: Path,
    per_class: dict[str, int],
    seed: int = 0,
    fonts: Sequence[str] | None = None,
) -> list[str]:
    """Glyphs at 28 px (see :func:`render_glyph`): ``per_class[split]`` images of each class of
    :data:`GLYPHS` per split → ``out/<split>/<class>/<index>.png``, fonts drawn uniformly from
    ``fonts`` (default :func:`find_fonts`). Image ``i`` of a class and split is drawn from its
    own generator seeded by ``(seed, split, class, i)``, so splits share no random stream.
    Returns the fonts used."""
    fonts = list(fonts) if fonts is not None else find_fonts()
    for split, count in per_class.items():
        code = _SPLIT_CODES.get(split, len(_SPLIT_CODES))
        for label, (name, char) in enumerate(GLYPHS):
            target = out / split / name
            target.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([seed, code, label, i])
                font = fonts[int(rng.integers(len(fonts)))]
                Image.fromarray(render_glyph(char, font, rng)).save(target / f"{i:05d}.png")
    return fonts
