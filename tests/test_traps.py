"""digits-traps: four camera-trap sites of the digits world — generation, splits, sources, cache and errors."""

from __future__ import annotations

import numpy as np
import pytest

from promptgen.errors import ConfigError
from promptgen_digits import glyphs, traps, world
from promptgen_digits.dataset import SPLITS
from promptgen_digits.report import preview
from promptgen_digits.traps import DigitsTraps, generate_site


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> DigitsTraps:
    """digits-traps at 10 images per class and site (6 train, 2 val, 2 test), generated once for the module."""
    cache = tmp_path_factory.mktemp("traps-cache")
    return DigitsTraps(options=DigitsTraps.Options(seed=0, per_class=10, cache_dir=cache))


@pytest.mark.parametrize("site", traps.SITES)
def test_generation_is_deterministic_per_seed(site):
    first, second = generate_site(site, 3, 5, 32), generate_site(site, 3, 5, 32)
    assert first["image"].tobytes() == second["image"].tobytes()
    assert first["image"].shape == (50, 32, 32, 3) and first["image"].dtype == np.uint8
    assert generate_site(site, 4, 5, 32)["image"].tobytes() != first["image"].tobytes()


def test_every_site_keeps_its_splits_apart_with_every_class(small):
    assert small.domains == ("night-ir-a", "night-ir-b", "dusk", "day") and small.classes == world.CLASSES
    for site in small.domains:
        samples = {split: small.samples(site, split) for split in SPLITS}
        keys = [s.key for split in SPLITS for s in samples[split]]
        assert len(keys) == len(set(keys)) == 100
        assert all(key.startswith(f"{site}/") for key in keys)
        for split, per_class in zip(SPLITS, (6, 2, 2)):
            labels = [s.label for s in samples[split]]
            assert [labels.count(c) for c in range(10)] == [per_class] * 10, (site, split)
            assert {s.version for s in samples[split]} == {small.directory.name}
    image = small.load_image(small.samples("dusk", "test")[0])
    assert image.size == (32, 32) and image.mode == "RGB"


def test_handwritten_sources_are_not_shared_across_splits(monkeypatch):
    drawn = {}  # (label, pool of UCI sources the split may use) -> UCI indices drawn from it
    current = {}
    render, handwritten = traps.render, glyphs.handwritten

    def spy_render(site, label, rng, sources, difficulty=1.0):
        current["pool"] = (label, frozenset(sources.tolist()))
        drawn.setdefault(current["pool"], set())
        return render(site, label, rng, sources, difficulty)

    def spy_handwritten(index, rng):
        drawn[current["pool"]].add(index)
        return handwritten(index, rng)

    monkeypatch.setattr(traps, "render", spy_render)
    monkeypatch.setattr(glyphs, "handwritten", spy_handwritten)
    generate_site("night-ir-b", 0, 20, 32)
    labels = glyphs.uci_digits()[1]
    dg = set(glyphs.uci_indices("dg").tolist())
    for label in range(10):
        pools = [pool for (lab, pool) in drawn if lab == label]
        assert len(pools) == 3  # one per split, in the order the splits are generated
        assert not (pools[0] & pools[1] or pools[0] & pools[2] or pools[1] & pools[2])
        for pool in pools:
            used = drawn[(label, pool)]
            assert used <= pool <= dg and all(labels[i] == label for i in used)
    assert sum(len(used) for used in drawn.values()) > 50  # about half the glyphs are handwritten


def test_sites_look_different(small):
    images = {site: small.images(site)["image"].astype(np.float64) for site in small.domains}
    for site in ("night-ir-a", "night-ir-b"):  # infrared: grey
        assert np.array_equal(images[site][..., 0], images[site][..., 2])
    blue_minus_red = {site: (images[site][..., 2] - images[site][..., 0]).mean() for site in small.domains}
    assert blue_minus_red["dusk"] > 10  # a blue dusk
    assert np.abs(images["day"][..., 1] - images["day"][..., 0]).mean() > 3  # colour by day
    means = {site: images[site].mean(axis=0) for site in small.domains}  # the mean image: the fixed scene
    for i, a in enumerate(small.domains):
        for b in small.domains[i + 1 :]:
            assert np.abs(means[a] - means[b]).mean() > 10, (a, b)


def test_images_are_cached_on_disk_and_read_back(tmp_path, monkeypatch):
    first = DigitsTraps(options=DigitsTraps.Options(per_class=5, cache_dir=tmp_path))
    image = np.asarray(first.load_image(first.samples("day", "val")[3]))
    assert (tmp_path / "digits-traps" / "v1-seed0-n5-px32" / "day.npz").is_file()
    monkeypatch.setattr("promptgen_digits.traps.generate_site", lambda *a: pytest.fail("must read the cache"))
    second = DigitsTraps(options=DigitsTraps.Options(per_class=5, cache_dir=tmp_path))
    assert np.array_equal(np.asarray(second.load_image(second.samples("day", "val")[3])), image)


def test_difficulty_is_another_dataset(tmp_path):
    harder = DigitsTraps(options=DigitsTraps.Options(per_class=5, cache_dir=tmp_path, difficulty=2))
    assert harder.directory.name == "v1-seed0-n5-px32-d2"
    assert harder.samples("dusk", "test")[0].version == "v1-seed0-n5-px32-d2"
    default = DigitsTraps(options=DigitsTraps.Options(per_class=5, cache_dir=tmp_path))
    assert harder.images("dusk")["image"].tobytes() != default.images("dusk")["image"].tobytes()


def _create(**options):
    from promptgen.components.registry import default_registry

    return default_registry().create("dataset", "digits-traps", **options)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda p: _create(seed="1", cache_dir=str(p)), r"digits-traps' \(plugin digits\): option 'seed' must be int, "
                                                         r"got '1' \(str\)"),
        (lambda p: _create(per_class=3, cache_dir=str(p)), "digits-traps' \\(plugin digits\\): option 'per_class' must "
                                                          "be >= 5, got 3"),
        (lambda p: _create(difficulty=0, cache_dir=str(p)), "option 'difficulty' must be > 0, got 0"),
        (lambda p: _create(difficulty=4.5, cache_dir=str(p)), "option 'difficulty' must be <= 4, got 4.5"),
        (lambda p: DigitsTraps(options=DigitsTraps.Options(cache_dir=p)).samples("photo", "train"),
         "digits-traps: unknown domain 'photo'; domains: night-ir-a, night-ir-b, dusk, day"),
        (lambda p: DigitsTraps(options=DigitsTraps.Options(cache_dir=p)).samples("day", "dev"),
         "digits-traps: unknown split 'dev'; splits: train, val, test"),
        (lambda p: DigitsTraps(options=DigitsTraps.Options(cache_dir=p)).images("sketch"),
         "digits-traps: unknown domain 'sketch'"),
    ],
)
def test_bad_arguments_name_digits_traps(tmp_path, build, message):
    """Through the registry, as a run builds it (the declared options are checked there, before the dataset)."""
    with pytest.raises(ConfigError, match=message):
        build(tmp_path)


@pytest.mark.slow
def test_unwritable_cache_directory_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="digits-traps cache directory: cannot write to .*a-file/cache"):
        DigitsTraps(options=DigitsTraps.Options(cache_dir=blocker / "cache")).samples("dusk", "train")


def test_preview_draws_every_site(small, tmp_path):
    out = preview(small, tmp_path / "traps.png", per_cell=1)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
