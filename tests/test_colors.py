"""The built-in colors dataset: deterministic, disjoint splits and reproducible images."""

import numpy as np
import pytest

from promptgen.errors import ConfigError
from promptgen_colors.dataset import ColorsDataset


def test_splits_are_disjoint_cover_every_image_and_depend_on_the_seed():
    dataset = ColorsDataset(options=ColorsDataset.Options(seed=1, per_class=10))
    for domain in dataset.domains:
        splits = {split: dataset.samples(domain, split) for split in ("train", "val", "test")}
        keys = [s.key for samples in splits.values() for s in samples]
        assert len(keys) == len(set(keys)) == 10 * len(dataset.classes)
        assert [len(splits[s]) for s in ("train", "val", "test")] == [6 * 8, 2 * 8, 2 * 8]

    def seeded(seed):
        return ColorsDataset(options=ColorsDataset.Options(seed=seed))

    assert seeded(1).samples("solid", "test") == seeded(1).samples("solid", "test")
    assert seeded(1).samples("solid", "test") != seeded(2).samples("solid", "test")


def test_images_are_reproducible_and_differ_by_domain():
    dataset = ColorsDataset(options=ColorsDataset.Options(seed=0))
    sample = dataset.samples("noise", "train")[0]
    first, second = np.asarray(dataset.load_image(sample)), np.asarray(dataset.load_image(sample))
    assert first.shape == (32, 32, 3) and np.array_equal(first, second)
    solid = np.asarray(dataset.load_image(dataset.samples("solid", "train")[0]))
    assert solid.std() < first.std()


def test_bad_domain_or_split_names_the_allowed_values():
    with pytest.raises(ConfigError, match="domains: solid, stripes, noise"):
        ColorsDataset().samples("cartoon", "train")
    with pytest.raises(ConfigError, match="splits: train, val, test"):
        ColorsDataset().samples("solid", "holdout")
