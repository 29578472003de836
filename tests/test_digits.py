"""The digits world: digits-dg generation, splits, cache and errors; the shipped tiny-clip-digits checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from promptgen import cli
from promptgen.errors import ConfigError
from promptgen.components.registry import create
from promptgen_digits import glyphs, styles, world
from promptgen_digits.backbone import CARD
from promptgen_digits.dataset import SPLITS, DigitsDG, generate_domain
from promptgen_digits.report import SUBSET_STRIDE, domain_features, zero_shot


@pytest.fixture(scope="session")
def digits_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("digits-cache")


@pytest.fixture(scope="session")
def digits(digits_cache) -> DigitsDG:
    """The default digits-dg (seed 0, 200 per class), generated once for the session."""
    return DigitsDG(options=DigitsDG.Options(seed=0, cache_dir=digits_cache))


@pytest.mark.parametrize("domain", world.DOMAINS)
def test_generation_is_deterministic_per_seed(domain):
    first, second = generate_domain(domain, 3, 5, 32), generate_domain(domain, 3, 5, 32)
    assert first["image"].tobytes() == second["image"].tobytes()
    assert first["image"].shape == (50, 32, 32, 3) and first["image"].dtype == np.uint8
    assert generate_domain(domain, 4, 5, 32)["image"].tobytes() != first["image"].tobytes()


@pytest.mark.slow
def test_splits_are_disjoint_stable_and_hold_every_class(digits, digits_cache):
    for domain in digits.domains:
        keys = {split: [s.key for s in digits.samples(domain, split)] for split in SPLITS}
        assert [len(keys[s]) for s in SPLITS] == [1200, 400, 400]
        assert len(set().union(*map(set, keys.values()))) == 2000
        for split in SPLITS:
            assert {s.label for s in digits.samples(domain, split)} == set(range(10))
    again = DigitsDG(options=DigitsDG.Options(seed=0, cache_dir=digits_cache))
    assert again.samples("photo", "val") == digits.samples("photo", "val")


def test_images_are_cached_on_disk_and_read_back(digits_cache, monkeypatch):
    first = DigitsDG(options=DigitsDG.Options(seed=0, cache_dir=digits_cache))
    image = np.asarray(first.load_image(first.samples("sketch", "test")[5]))
    assert (first.directory / "sketch.npz").is_file()
    monkeypatch.setattr("promptgen_digits.dataset.generate_domain", lambda *a: pytest.fail("must read the cache"))
    second = DigitsDG(options=DigitsDG.Options(seed=0, cache_dir=digits_cache))
    assert np.array_equal(np.asarray(second.load_image(second.samples("sketch", "test")[5])), image)
    assert image.shape == (32, 32, 3)


def test_pretraining_holds_out_fonts_photos_and_writers():
    assert not set(glyphs.PRETRAIN_FONTS) & set(glyphs.HELD_OUT_FONTS)
    assert not set(styles.PRETRAIN_PHOTOS) & set(styles.HELD_OUT_PHOTOS)
    assert not set(glyphs.uci_indices("pretrain")) & set(glyphs.uci_indices("dg"))
    rng = np.random.default_rng(0)
    image, caption, label = world.pretraining_pair(rng)
    assert image.shape == (64, 64, 3)
    assert world.CLASSES[label] in caption or str(label) in caption


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda d: d.samples("cartoon", "train"), "unknown domain 'cartoon'; domains: handwritten, typeset, photo, sketch"),
        (lambda d: d.samples("photo", "dev"), "unknown split 'dev'; splits: train, val, test"),
    ],
)
def test_bad_names_list_the_choices(tmp_path, build, message):
    with pytest.raises(ConfigError, match=message):
        build(DigitsDG(options=DigitsDG.Options(cache_dir=tmp_path)))


def test_seed_must_be_an_int(tmp_path):
    from promptgen.components.registry import default_registry

    with pytest.raises(ConfigError, match=r"dataset 'digits-dg' \(plugin digits\): option 'seed' must be int, got '1' "
                                          r"\(str\)"):
        default_registry().create("dataset", "digits-dg", seed="1", cache_dir=str(tmp_path))


@pytest.mark.slow
def test_unwritable_cache_directory_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    dataset = DigitsDG(options=DigitsDG.Options(cache_dir=blocker / "cache"))
    with pytest.raises(ConfigError, match="digits-dg cache directory: cannot write to .*a-file/cache"):
        dataset.samples("photo", "train")


@pytest.mark.slow
def test_shipped_checkpoint_loads_offline_by_name_and_reproduces_its_card(digits):
    card = json.loads(CARD.read_text())
    backbone = create("backbone", "tiny-clip-digits", device="cpu")
    assert backbone.fingerprint == card["fingerprint"]
    assert CARD.with_suffix(".safetensors").stat().st_size <= 25 * 10**6
    features = domain_features(backbone, digits, "test", stride=SUBSET_STRIDE)
    accuracy = zero_shot(backbone, digits, features)
    for domain, expected in card["zero_shot_subset"]["accuracy"].items():
        assert abs(100 * accuracy[domain] - 100 * expected) <= 1.0, domain


@pytest.mark.slow
def test_world_preview_writes_a_png(digits_cache, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert cli.main(["world", "preview", "--cache-dir", str(digits_cache), "--out", str(out), "--per-cell", "1"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    traps = tmp_path / "traps.png"
    assert cli.main(["world", "preview", "--dataset", "digits-traps", "--cache-dir", str(tmp_path), "--out", str(traps),
                     "--per-cell", "1"]) == 0
    assert traps.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "digits-traps").is_dir()


@pytest.mark.slow
def test_pretraining_is_reproducible_from_its_seed(tmp_path):
    from safetensors.torch import load_file

    from promptgen_digits.pretrain import PretrainConfig, pretrain

    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        config = PretrainConfig(steps=3, batch_size=16, warmup_steps=1, seed=seed)
        facts = pretrain(config, tmp_path / name, device="cpu", progress=False)
        runs.append(load_file(tmp_path / name / facts["weights"]))
    assert all(runs[0][k].equal(runs[1][k]) for k in runs[0])
    assert not all(runs[0][k].equal(runs[2][k]) for k in runs[0])


def test_report_tables_show_every_number():
    from promptgen_digits.report import TEMPLATES, markdown

    matrix = {"a": {"a": 1.0, "b": 0.5}, "b": {"a": 0.2, "b": 0.9}}
    part = {"zero_shot": {"a": 0.5, "b": 0.25}, "in_domain_probe": {"a": 1.0, "b": 0.9},
            "cross_domain_probe": {"a": 0.2, "b": 0.5}, "templates": {key: {"a": 0.1, "b": 0.3} for key in TEMPLATES},
            "linear_probe": matrix, "pixel_probe": matrix, "domain_classifier": 0.8}
    text = markdown({"datasets": {"digits-dg": part, "digits-traps": part}})
    assert text.count("## digits-") == 2
    assert text.count("| zero-shot | 50.0 | 25.0 | 37.5 |") == 2
    assert text.count("| in-domain probe | 100.0 | 90.0 | 95.0 |") == 2
    assert text.count('| "a handwritten {word}." | 10.0 | 30.0 | 20.0 |') == 2
    assert text.count("| b | 20.0 | 90.0 |") == 4
    assert "Domain classifier on image features: 80.0% (chance 50%)" in text
