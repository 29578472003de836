"""digits-c: the digits-dg images under four corruptions — a second dataset with the same ten classes, so
that cross-dataset DG (train on digits-dg, test on digits-c) has somewhere to go.

Each domain is one corruption of a quarter of digits-dg's images of every domain (each split keeps its
split), applied when the image is loaded with a random state fixed by the sample key — nothing is
stored beyond digits-dg's own cache.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from promptgen.toolkit import ConfigError, Sample, stable_int_hash
from promptgen_digits.dataset import DigitsDG, DigitsOptions, SPLITS

STRIDE = 4  # every 4th digits-dg image: 400 test images per corruption, like a digits-dg domain


def _noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, np.float32) + rng.normal(0.0, 48.0, (*image.size[::-1], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(1.0, 1.6))))


def _low_contrast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, np.float32)
    factor = float(rng.uniform(0.25, 0.4))
    return Image.fromarray((pixels.mean() + factor * (pixels - pixels.mean())).astype(np.uint8), "RGB")


def _inverted(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return ImageOps.invert(image)


CORRUPTIONS = {"noise": _noise, "blur": _blur, "low-contrast": _low_contrast, "inverted": _inverted}


class DigitsC:
    """digits-dg under noise, blur, low contrast and inversion: same classes, four new domains."""

    domains = tuple(CORRUPTIONS)
    classes = DigitsDG.classes

    Options = DigitsOptions  # digits-dg's: the images it corrupts

    def __init__(self, root=None, options: DigitsOptions = DigitsOptions()):
        self.options = options
        self.base = DigitsDG(root, options)

    def samples(self, domain: str, split: str) -> list[Sample]:
        if domain not in CORRUPTIONS:
            raise ConfigError(f"digits-c: unknown domain {domain!r}; domains: {', '.join(self.domains)}")
        if split not in SPLITS:
            raise ConfigError(f"digits-c: unknown split {split!r}; splits: {', '.join(SPLITS)}")
        base = [s for d in self.base.domains for s in self.base.samples(d, split)][CORRUPTIONS_OFFSET[domain]::STRIDE]
        return [Sample(key=f"{domain}/{s.key}", label=s.label, domain=domain, source=s, version=s.version) for s in base]

    def load_image(self, sample: Sample) -> Image.Image:
        rng = np.random.default_rng(stable_int_hash("digits-c", sample.key))
        return CORRUPTIONS[sample.domain](self.base.load_image(sample.source), rng)


# Each corruption takes a different quarter of the base images, so no image appears under two corruptions.
CORRUPTIONS_OFFSET = {name: i for i, name in enumerate(CORRUPTIONS)}
