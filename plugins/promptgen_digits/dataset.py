"""DigitsDG: four domains (handwritten, typeset, photo, sketch) of the ten digits, generated once and cached.

Images are generated on first use from the seed, written atomically to one ``.npz`` per domain
under the cache directory, and read from there afterwards. Splits are fixed by the seed; in the
handwritten-derived images the UCI source digits themselves are split, so no source digit is
shared between train, val and test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import attrs
import numpy as np
from PIL import Image

from promptgen.toolkit import atomic_file, cache_root, ConfigError, option, Sample, writable_dir
from promptgen_digits import styles, world

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
FORMAT_VERSION = 1  # bump when generation changes: old caches are then ignored, never misread



@attrs.frozen(kw_only=True)
class DigitsOptions:
    """The options of the generated digits datasets (digits-dg, digits-c, digits-traps), declared once."""

    seed: Annotated[int, option("seed of the generated images and their split; the data's own, the same for every "
                                "run seed", minimum=0)] = attrs.field(default=0, converter=int)
    per_class: Annotated[int, option("images per class and domain, split 60/20/20 into train, val and test",
                                     minimum=5)] = 200
    image_size: Annotated[int, option("side of the square images in pixels", minimum=1)] = 32
    cache_dir: Any = None  # a run value: a str or a Path


class DigitsDG:
    """Ten digits in four domains (handwritten, typeset, photo, sketch) from real handwriting, fonts and photos."""

    name = "digits-dg"  # in messages and the cache path; a subclass (digits-traps) sets its own
    format_version = FORMAT_VERSION
    domains = world.DOMAINS
    classes = world.CLASSES

    Options = DigitsOptions

    def __init__(self, root=None, options: DigitsOptions = DigitsOptions()):
        self.options = options
        base = cache_root(options.cache_dir or root) / self.name
        self.directory = base / f"v{self.format_version}-seed{options.seed}-n{options.per_class}-px{options.image_size}"
        self._arrays: dict[str, dict[str, np.ndarray]] = {}

    # --- the Dataset protocol -----------------------------------------------------------------

    def samples(self, domain: str, split: str) -> list[Sample]:
        self._check(domain, split)
        arrays = self._domain(domain)
        chosen = np.flatnonzero(arrays["split"] == SPLITS.index(split))
        return [
            Sample(key=f"{domain}/{i:05d}", label=int(arrays["label"][i]), domain=domain, source=int(i),
                   version=self.directory.name)  # the recipe (format, seed, size): image i of another is another image
            for i in chosen
        ]

    def load_image(self, sample: Sample) -> Image.Image:
        return Image.fromarray(self._domain(sample.domain)["image"][sample.source], mode="RGB")

    # --- generation and cache -----------------------------------------------------------------

    def images(self, domain: str) -> dict[str, np.ndarray]:
        """The whole domain as arrays: image [N, S, S, 3] uint8, label [N], split [N] (index into SPLITS)."""
        self._check(domain, "train")
        return self._domain(domain)

    def _domain(self, domain: str) -> dict[str, np.ndarray]:
        if domain not in self._arrays:
            path = self.directory / f"{domain}.npz"
            if not path.exists():
                self._write(path, self._generate(domain))
            with np.load(path, allow_pickle=False) as data:
                self._arrays[domain] = {key: data[key] for key in ("image", "label", "split")}
        return self._arrays[domain]

    def _generate(self, domain: str) -> dict[str, np.ndarray]:
        return generate_domain(domain, self.options.seed, self.options.per_class, self.options.image_size)

    def _write(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        write_npz(path, arrays, f"{self.name} cache directory")

    def _check(self, domain: str, split: str) -> None:
        if domain not in self.domains:
            raise ConfigError(f"{self.name}: unknown domain {domain!r}; domains: {', '.join(self.domains)}")
        if split not in SPLITS:
            raise ConfigError(f"{self.name}: unknown split {split!r}; splits: {', '.join(SPLITS)}")


def write_npz(path: Path, arrays: dict[str, np.ndarray], what: str) -> None:
    """Write ``arrays`` to ``path`` atomically (``what`` names the directory in the error when it is not writable)."""
    writable_dir(path.parent, what)
    with atomic_file(path, "wb") as file:  # a run killed mid-write never leaves a half file that looks complete
        np.savez(file, **arrays)


def split_sizes(per_class: int) -> list[int]:
    sizes = [int(round(f * per_class)) for f in SPLIT_FRACTIONS[:-1]]
    return sizes + [per_class - sum(sizes)]


def generate_domain(domain: str, seed: int, per_class: int, image_size: int) -> dict[str, np.ndarray]:
    """Every image of one domain, deterministic for (domain, seed, per_class, image_size)."""
    return generate(lambda label, rng, sources: world.dg_image(domain, label, rng, sources),
                    world.DOMAINS.index(domain), seed, per_class, image_size)


def generate(render, domain_index: int, seed: int, per_class: int, image_size: int) -> dict[str, np.ndarray]:
    """Every image of one domain: ``render(label, rng, uci_sources)`` draws one canvas-size RGB image.

    Seeded by (seed, domain_index, label, split), so a domain's images do not depend on the other domains."""
    images, labels, splits = [], [], []
    for label in range(len(world.CLASSES)):
        # Split the UCI source digits of this class first, so that each split draws on its own writers' digits.
        pool = world.uci_by_label("dg")[label]
        order = np.random.default_rng([seed, domain_index, label, 0]).permutation(pool)
        cut = np.cumsum([0, *split_sizes(len(order))])
        for split, count in enumerate(split_sizes(per_class)):
            sources = order[cut[split] : cut[split + 1]]
            rng = np.random.default_rng([seed, domain_index, label, split + 1])
            for _ in range(count):
                images.append(styles.finish(render(label, rng, sources), image_size))
                labels.append(label)
                splits.append(split)
    return {"image": np.stack(images), "label": np.array(labels, np.int64), "split": np.array(splits, np.int8)}
