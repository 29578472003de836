"""Digit shapes from real sources: UCI handwriting (scikit-learn) and the typefaces matplotlib ships.

A glyph is a float mask in [0, 1] of shape [CANVAS, CANVAS], drawn at twice the final image size
so that styles can be applied before downsampling (antialiasing).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

CANVAS = 64

# Faces seen in pretraining, and faces only the digits-dg `typeset` domain uses (held out).
PRETRAIN_FONTS = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif.ttf",
    "STIXGeneral.ttf", "cmr10.ttf", "cmss10.ttf",
)
HELD_OUT_FONTS = (
    "DejaVuSans-BoldOblique.ttf", "DejaVuSerif-BoldItalic.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneralBolIta.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf",
)
# How captions describe each face.
FONT_DESCRIPTIONS = {
    "DejaVuSans.ttf": "sans-serif", "DejaVuSans-Bold.ttf": "bold sans-serif", "DejaVuSansMono.ttf": "monospace",
    "DejaVuSerif.ttf": "serif", "STIXGeneral.ttf": "times-like serif", "cmr10.ttf": "computer modern",
    "cmss10.ttf": "computer modern sans",
}


@functools.cache
def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=512)
def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_dir() / name), size)


def typeset(digit: int, font: str, rng: np.random.Generator) -> np.ndarray:
    """The digit in ``font`` with jitter in size, position, rotation and stroke."""
    face = _font(font, int(rng.integers(30, 50)))
    image = Image.new("L", (CANVAS, CANVAS), 0)
    draw = ImageDraw.Draw(image)
    stroke = int(rng.integers(0, 3))
    left, top, right, bottom = draw.textbbox((0, 0), str(digit), font=face, stroke_width=stroke)
    x = (CANVAS - (right - left)) / 2 - left + rng.uniform(-6, 6)
    y = (CANVAS - (bottom - top)) / 2 - top + rng.uniform(-6, 6)
    draw.text((x, y), str(digit), fill=255, font=face, stroke_width=stroke, stroke_fill=255)
    image = image.rotate(rng.uniform(-15, 15), resample=Image.BILINEAR)
    return np.asarray(image, dtype=np.float32) / 255.0


@functools.cache
def uci_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 real UCI handwritten digits (8x8, 0..16) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


def uci_indices(part: str) -> np.ndarray:
    """Pretraining sees the even-indexed UCI digits, digits-dg's `handwritten` domain the odd ones."""
    count = len(uci_digits()[1])
    return np.arange(0 if part == "pretrain" else 1, count, 2)


def handwritten(index: int, rng: np.random.Generator) -> np.ndarray:
    """UCI digit ``index`` upscaled to 36-50 px, placed with jitter and a small rotation."""
    image8 = uci_digits()[0][index]
    size = int(rng.integers(36, 50))
    glyph = Image.fromarray((image8 / 16.0 * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    canvas = Image.new("L", (CANVAS, CANVAS), 0)
    offset = (CANVAS - size) // 2
    canvas.paste(glyph, (offset + int(rng.integers(-5, 6)), offset + int(rng.integers(-5, 6))))
    canvas = canvas.rotate(rng.uniform(-10, 10), resample=Image.BILINEAR)
    return np.asarray(canvas, dtype=np.float32) / 255.0
