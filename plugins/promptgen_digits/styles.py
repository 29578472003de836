"""Styles: how a glyph mask becomes an RGB image (ink on paper, on a photograph, as a sketch).

Each style takes a mask [CANVAS, CANVAS] in [0, 1] and a random generator and returns float RGB
in [0, 255] at canvas size; ``finish`` downsamples to the final image size.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageFilter

from promptgen_digits.glyphs import CANVAS

# Photographs and textures that scikit-image ships: pretraining composites use the first set,
# digits-dg's `photo` domain only the second (held out).
PRETRAIN_PHOTOS = ("astronaut", "coffee", "rocket", "hubble_deep_field", "brick", "grass", "camera", "moon")
HELD_OUT_PHOTOS = ("chelsea", "immunohistochemistry", "retina", "gravel", "coins", "clock", "colorwheel")


def blend(mask: np.ndarray, background: np.ndarray, ink: np.ndarray) -> np.ndarray:
    m = mask[..., None]
    return background * (1 - m) + ink * m


def ink_on_paper(mask, rng, *, ruled: bool, ink_colours: tuple, paper_tint: float) -> np.ndarray:
    """Ink of one of ``ink_colours`` on paper; ``ruled`` adds faint ruling lines."""
    paper = np.full((CANVAS, CANVAS, 3), 250.0) - rng.uniform(0, paper_tint, 3)
    if ruled:
        spacing, start = int(rng.integers(10, 16)), int(rng.integers(0, 10))
        paper[start::spacing, :] = paper[start::spacing, :] * 0.6 + np.array([120.0, 150, 220]) * 0.4
    paper += rng.normal(0, 4, paper.shape)
    ink = np.array(ink_colours[int(rng.integers(len(ink_colours)))], dtype=float) + rng.normal(0, 10, 3)
    return blend(np.clip(mask * rng.uniform(0.8, 1.0), 0, 1), paper, ink)


def coloured(mask, rng, *, saturated: bool) -> np.ndarray:
    """A glyph on a plain ground, light on dark or dark on light.

    saturated: ground and ink anywhere in the colour cube (digits-dg); otherwise greys with a
    slight tint (pretraining), so saturated colour is a shift the backbone never saw.
    """
    def colour():
        if saturated:
            return rng.uniform(0, 255, 3)
        return rng.uniform(0, 255) + rng.uniform(-20, 20, 3)

    ground, ink = colour(), colour()
    while abs(ground.mean() - ink.mean()) < 70:
        ink = colour()
    return blend(mask, np.broadcast_to(ground, (CANVAS, CANVAS, 3)), ink)


@functools.cache
def photograph(name: str) -> np.ndarray:
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return image[..., :3].astype(np.float32)


def photo_crop(name: str, rng) -> np.ndarray:
    """A random crop of a photograph, scaled to the canvas."""
    photo = photograph(name)
    height, width = photo.shape[:2]
    side = int(rng.integers(min(height, width) // 6, min(height, width) // 2))
    top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
    crop = Image.fromarray(photo[top : top + side, left : left + side].astype(np.uint8))
    return np.asarray(crop.resize((CANVAS, CANVAS), Image.BILINEAR), dtype=np.float32)


def on_photo(mask, rng, *, photos: tuple) -> np.ndarray:
    """MNIST-M: a photograph crop, its colours inverted inside the glyph."""
    background = photo_crop(photos[int(rng.integers(len(photos)))], rng)
    return np.abs(background - 255.0 * mask[..., None])


def sketch(mask, rng, *, hatched: bool) -> np.ndarray:
    """A pencil outline on paper; ``hatched`` adds diagonal hatching inside the glyph and a thicker line."""
    glyph = Image.fromarray((mask * 255).astype(np.uint8))
    width = 3 if not hatched else int(rng.choice([3, 5]))
    outline = np.asarray(glyph.filter(ImageFilter.MaxFilter(width)), dtype=np.float32) - np.asarray(
        glyph.filter(ImageFilter.MinFilter(width)), dtype=np.float32
    )
    lines = np.clip(outline / 255.0, 0, 1)
    if hatched:
        spacing = int(rng.integers(4, 7))
        angle = rng.choice([1, -1])
        rows, cols = np.mgrid[0:CANVAS, 0:CANVAS]
        hatch = ((rows + angle * cols) % spacing == 0).astype(np.float32)
        lines = np.maximum(lines, hatch * (mask > 0.5) * rng.uniform(0.5, 0.9))
    paper = np.full((CANVAS, CANVAS, 3), 245.0) + rng.normal(0, 6, (CANVAS, CANVAS, 3))
    pencil = np.full(3, rng.uniform(30, 110))
    return blend(lines * rng.uniform(0.7, 1.0), paper, pencil)


def finish(rgb: np.ndarray, size: int) -> np.ndarray:
    """Canvas-size float RGB -> uint8 [size, size, 3], downsampled with antialiasing."""
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), mode="RGB")
    return np.asarray(image.resize((size, size), Image.LANCZOS), dtype=np.uint8)
