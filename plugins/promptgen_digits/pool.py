"""The LiT pool: a fixed set of images from tiny-clip-digits' pretraining distribution, as a dataset.

Being a dataset, its image features go through promptgen's feature cache like any other's: computed
once per image tower and reused by every text-tower retrain. Each image keeps what a caption needs
(label, style, font), so captions are drawn afresh at every training step.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from promptgen.toolkit import cache_root, Sample
from promptgen_digits import glyphs, styles, world
from promptgen_digits.dataset import write_npz

FORMAT_VERSION = 1  # bump when the pretraining distribution changes


class PretrainPool:
    """``size`` images of the pretraining distribution (seeded); domains are the pretraining styles."""

    name = "digits-pretrain-pool"
    domains = world.PRETRAIN_STYLES
    classes = world.CLASSES

    def __init__(self, seed: int = 0, size: int = 30_000, image_size: int = 32, cache_dir=None):
        self.seed, self.size, self.image_size = seed, size, image_size
        self.directory = cache_root(cache_dir) / "digits-pretrain" / f"v{FORMAT_VERSION}-seed{seed}-n{size}-px{image_size}"
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.size

    def metadata(self) -> dict[str, np.ndarray]:
        """image [N, S, S, 3] uint8, label [N], style [N] (index into PRETRAIN_STYLES), font [N] (into PRETRAIN_FONTS)."""
        if self._arrays is None:
            path = self.directory / "pool.npz"
            if not path.exists():
                write_npz(path, generate_pool(self.seed, self.size, self.image_size), "LiT pool cache directory")
            with np.load(path, allow_pickle=False) as data:
                self._arrays = {key: data[key] for key in ("image", "label", "style", "font")}
        return self._arrays

    def all_samples(self) -> list[Sample]:
        meta = self.metadata()
        return [Sample(key=f"pool/{i:06d}", label=int(meta["label"][i]), domain=self.domains[meta["style"][i]],
                       source=i, version=self.directory.name) for i in range(self.size)]

    def samples(self, domain: str, split: str) -> list[Sample]:
        return [s for s in self.all_samples() if s.domain == domain] if split == "train" else []

    def load_image(self, sample: Sample) -> Image.Image:
        return Image.fromarray(self.metadata()["image"][sample.source], mode="RGB")


def generate_pool(seed: int, size: int, image_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 11])
    images, labels, style_ids, font_ids = [], [], [], []
    for _ in range(size):
        image, label, style, font = world.pretraining_image(rng)
        images.append(styles.finish(image, image_size))
        labels.append(label)
        style_ids.append(world.PRETRAIN_STYLES.index(style))
        font_ids.append(glyphs.PRETRAIN_FONTS.index(font))
    return {"image": np.stack(images), "label": np.array(labels, np.int64), "style": np.array(style_ids, np.int8),
            "font": np.array(font_ids, np.int8)}
