"""ColorsDataset: eight colour classes drawn in three styles (domains), generated on demand from a seed.

Small enough to build in milliseconds, so tests and the quick demo need no data on disk; with real
CLIP weights zero-shot accuracy is high on ``solid`` and lower on the other styles.
"""

from __future__ import annotations

from typing import Annotated

import attrs
import numpy as np
from PIL import Image

from promptgen.toolkit import ConfigError, option, Sample

COLORS = {
    "red": (210, 30, 30),
    "green": (40, 170, 40),
    "blue": (30, 60, 210),
    "yellow": (235, 220, 40),
    "purple": (130, 40, 160),
    "orange": (245, 140, 20),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)


class ColorsDataset:
    """Procedural colour swatches (8 classes) in three styles: solid, stripes, noise."""

    domains = ("solid", "stripes", "noise")
    classes = tuple(COLORS)

    @attrs.frozen(kw_only=True)
    class Options:
        seed: Annotated[int, option("seed of the drawn swatches and their split; the data's own, the same for every "
                                    "run seed", minimum=0)] = 0
        per_class: Annotated[int, option("images per class and domain, split 60/20/20 into train, val and test (>= 5: "
                                         "one per split at least)", minimum=5)] = 20
        image_size: Annotated[int, option("side of the square images in pixels", minimum=1)] = 32

    def __init__(self, root=None, options: Options = Options()):
        self.options = options

    def samples(self, domain: str, split: str) -> list[Sample]:
        self._check(domain, split)
        per_class = self.options.per_class
        order = np.random.default_rng([self.options.seed, self.domains.index(domain)]).permutation(per_class)
        bounds = np.cumsum([0, *[round(f * per_class) for f in SPLIT_FRACTIONS]])
        bounds[-1] = per_class
        start, stop = bounds[SPLITS.index(split)], bounds[SPLITS.index(split) + 1]
        return [
            Sample(key=f"{domain}/{name}/{int(i):04d}", label=label, domain=domain, source=int(i),
                   version=f"seed{self.options.seed}-px{self.options.image_size}")  # both change the pixels of image i
            for label, name in enumerate(self.classes)
            for i in sorted(order[start:stop])
        ]

    def load_image(self, sample: Sample) -> Image.Image:
        label, domain = sample.label, sample.domain
        rng = np.random.default_rng([self.options.seed, self.domains.index(domain), label, sample.source])
        colour = np.clip(np.array(COLORS[self.classes[label]]) + rng.normal(0, 12, 3), 0, 255)
        size = self.options.image_size
        image = np.empty((size, size, 3))
        image[:] = colour
        if domain == "stripes":
            period = int(rng.integers(4, 9))
            rows = (np.arange(size) // (period // 2)) % 2 == 1
            image[rows] = rng.uniform(0, 255, 3)
        elif domain == "noise":
            image += rng.normal(0, 60, image.shape)
        return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="RGB")

    def _check(self, domain: str, split: str) -> None:
        if domain not in self.domains:
            raise ConfigError(f"colors: unknown domain {domain!r}; domains: {', '.join(self.domains)}")
        if split not in SPLITS:
            raise ConfigError(f"colors: unknown split {split!r}; splits: {', '.join(SPLITS)}")
