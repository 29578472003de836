"""The LMDB feature cache: what it returns, what it computes, how it survives crashes, and its CLI."""

import json

import numpy as np
import pytest
import torch

from promptgen import cli
from promptgen.storage.cache import FeatureCache
from promptgen.storage.feature_format import encode_entry, feature_key, transform_id
from promptgen.toolkit.data import extract_features
from promptgen.errors import ConfigError
from promptgen_colors.dataset import ColorsDataset

DATASET = ColorsDataset(options=ColorsDataset.Options(per_class=5))
SAMPLES = [s for domain in DATASET.domains for s in DATASET.samples(domain, "train")]  # 72 = 3 domains x 8 x 3


class CountingBackbone:
    """Delegates to a backbone, counting encode_images calls; raises after ``fail_after`` of them."""

    def __init__(self, backbone, fail_after: int | None = None):
        self._backbone = backbone
        self.fail_after = fail_after
        self.calls = 0

    def encode_images(self, pixels):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        return self._backbone.encode_images(pixels)

    def __getattr__(self, name):
        return getattr(self._backbone, name)


def get(cache, backbone, samples=SAMPLES, name="colors", **options):
    return cache.get(backbone, DATASET, name, samples, progress=False, **options)


def test_eval_features_equal_extract_features_within_float16(tiny_backbone, tmp_path):
    with FeatureCache(tmp_path) as cache:
        cached = get(cache, tiny_backbone)
    direct = extract_features(tiny_backbone, DATASET, SAMPLES, progress=False)
    assert cached.features.dtype == torch.float32 and cached.features.shape == (72, tiny_backbone.embed_dim)
    torch.testing.assert_close(cached.features, direct.features, atol=2e-3, rtol=0)
    assert cached.labels.tolist() == [s.label for s in SAMPLES]
    assert cached.domain_ids.tolist() == [DATASET.domains.index(s.domain) for s in SAMPLES]


def test_a_second_get_never_runs_the_image_encoder(tiny_backbone, tmp_path):
    counting = CountingBackbone(tiny_backbone)
    with FeatureCache(tmp_path) as cache:
        first = get(cache, counting, batch_size=32)
        assert counting.calls == 3
        second = get(cache, counting)
    assert counting.calls == 3
    assert torch.equal(first.features, second.features)


@pytest.mark.slow
def test_train_views_are_view_major_distinct_and_deterministic(tiny_backbone, tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    with FeatureCache(tmp_path / "a") as cache:
        views = get(cache, tiny_backbone, train=True, views=3)
        assert torch.equal(get(cache, tiny_backbone, train=True, views=3).features, views.features)
    assert torch.equal(torch.rand(3), expected_next), "seeding the views must not disturb the caller's RNG"
    with FeatureCache(tmp_path / "b") as other:  # computed afresh, in DataLoader workers this time
        again = get(other, tiny_backbone, train=True, views=3, num_workers=2)

    n = len(SAMPLES)
    assert views.features.shape == (3 * n, tiny_backbone.embed_dim)
    assert views.labels.tolist() == [s.label for s in SAMPLES] * 3
    per_view = views.features.view(3, n, -1)
    assert not torch.allclose(per_view[0], per_view[1]) and not torch.allclose(per_view[1], per_view[2])
    torch.testing.assert_close(again.features, views.features, atol=2e-3, rtol=0)


@pytest.mark.slow
def test_an_interrupted_run_keeps_its_batches_and_the_next_one_finishes(tiny_backbone, tmp_path):
    crashing = CountingBackbone(tiny_backbone, fail_after=2)
    with FeatureCache(tmp_path / "crash") as cache:
        with pytest.raises(RuntimeError, match="simulated crash"):
            get(cache, crashing, batch_size=16)
        assert [row["entries"] for row in cache.info()] == [32]

    resuming = CountingBackbone(tiny_backbone)
    with FeatureCache(tmp_path / "crash") as cache:
        resumed = get(cache, resuming, batch_size=16)
    assert resuming.calls == 3  # the 40 missing samples only, in batches of 16
    with FeatureCache(tmp_path / "whole") as cache:
        uninterrupted = get(cache, tiny_backbone, batch_size=16)
    assert torch.equal(resumed.features, uninterrupted.features)  # same batches, same float16 values


@pytest.mark.slow
def test_a_full_map_grows_and_keeps_everything(tiny_backbone, tmp_path):
    with FeatureCache(tmp_path, map_size=32 * 1024) as cache:
        features = get(cache, tiny_backbone, train=True, views=3, batch_size=64)
        assert cache.env.info()["map_size"] > 32 * 1024
        assert sum(row["entries"] for row in cache.info()) == 3 * len(SAMPLES)
        assert torch.equal(get(cache, tiny_backbone, train=True, views=3).features, features.features)


def test_verify_reports_each_damaged_entry_and_get_recomputes_it(tiny_backbone, tmp_path):
    fingerprint = tiny_backbone.image_fingerprint
    with FeatureCache(tmp_path) as cache:
        intact = get(cache, tiny_backbone, samples=SAMPLES[:4]).features
        assert cache.verify() == []
        good = encode_entry(0, "solid", np.ones(tiny_backbone.embed_dim))
        damaged = {
            SAMPLES[0].key: b"\x01\x02",
            SAMPLES[1].key: encode_entry(0, "solid", np.ones(7)),
            SAMPLES[2].key: encode_entry(0, "solid", np.full(tiny_backbone.embed_dim, np.nan)),
            SAMPLES[3].key: good[:-2] + bytes([good[-2] ^ 0x40, good[-1]]),  # one flipped bit
        }
        with cache.env.begin(write=True) as txn:
            for sample in SAMPLES[:4]:
                key = feature_key(fingerprint, transform_id(tiny_backbone, False), 0, "colors", sample.key,
                                  sample.version)
                txn.put(key, damaged[sample.key])
        problems = cache.verify()
        assert len(problems) == 4
        for symptom in ("shorter than the", "feature has 7 dims", "non-finite", "checksum mismatch"):
            assert sum(symptom in p for p in problems) == 1, symptom
        assert all(any(key in p for p in problems) for key in damaged)
        again = get(cache, tiny_backbone, samples=SAMPLES[:4])  # never used: computed again and stored
        assert cache.recomputed == 4 and torch.equal(again.features, intact)
        assert cache.verify() == []


def test_clear_by_dataset_and_by_fingerprint_prefix(tiny_backbone, tiny_backbone_wide, tmp_path):
    with FeatureCache(tmp_path) as cache:
        for backbone in (tiny_backbone, tiny_backbone_wide):
            for name in ("colors", "colors-copy"):
                get(cache, backbone, samples=SAMPLES[:5], name=name)
        assert cache.clear(dataset="colors-copy") == 10
        assert {(r["fingerprint"][:15], r["dataset"]) for r in cache.info()} == {
            ("pg-tiny-vit-w64", "colors"), ("pg-tiny-vit-w12", "colors")}
        assert cache.clear(fingerprint="pg-tiny-vit-w64") == 5
        assert [r["fingerprint"] for r in cache.info()] == [tiny_backbone_wide.image_fingerprint]
        assert cache.verify() == []


def test_the_eval_preprocessing_is_part_of_the_key(tiny_backbone, tmp_path):
    """Two backbones with the same weights but other eval preprocessing must not share features."""
    import torchvision.transforms as T

    class OtherCrop:
        def __init__(self, backbone):
            self._backbone = backbone

        def __getattr__(self, name):
            return getattr(self._backbone, name)

        def image_transform(self, train):
            steps = self._backbone.image_transform(train)
            return T.Compose([T.Resize(40), *steps.transforms]) if not train else steps

    other = OtherCrop(tiny_backbone)
    assert other.fingerprint == tiny_backbone.fingerprint
    assert transform_id(other, False) != transform_id(tiny_backbone, False)
    assert transform_id(other, True) == transform_id(tiny_backbone, True)
    with FeatureCache(tmp_path) as cache:
        get(cache, tiny_backbone, samples=SAMPLES[:3])
        get(cache, other, samples=SAMPLES[:3])
        assert sum(row["entries"] for row in cache.info()) == 6


def test_cache_dir_that_cannot_be_written_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=str(blocker)):  # a bad --cache-dir: the user's to fix (exit 2)
        FeatureCache(blocker)


def test_cli_info_verify_clear(tiny_backbone, tmp_path, capsys):
    with FeatureCache(tmp_path) as cache:
        get(cache, tiny_backbone, samples=SAMPLES[:6])
    root = ["--cache-dir", str(tmp_path)]

    assert cli.main(["cache", "info", "--json", *root]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["path"] == str((tmp_path / "features.lmdb").resolve())
    assert [(g["dataset"], g["transform"], g["entries"]) for g in listing["groups"]] == [
        ("colors", transform_id(tiny_backbone, False), 6)]

    assert cli.main(["cache", "verify", *root]) == 0
    assert capsys.readouterr().out.startswith("ok: 6 entries")

    assert cli.main(["cache", "clear", *root]) == 2
    assert "--all" in capsys.readouterr().err
    assert cli.main(["cache", "clear", "--dataset", "other", *root]) == 0
    assert capsys.readouterr().out.startswith("removed 0 entries")
    assert cli.main(["cache", "clear", "--backbone", "pg-tiny-vit-w64", *root]) == 0
    assert capsys.readouterr().out.startswith("removed 6 entries")
    assert cli.main(["cache", "info", *root]) == 0
    assert "0 entries" in capsys.readouterr().out


def test_two_recipes_of_a_generated_dataset_never_share_features(tiny_backbone, tmp_path):
    """digits-dg's image i depends on per_class and the seed: the sample version keeps them apart in the cache."""
    from promptgen_digits.dataset import DigitsDG

    small, larger = (DigitsDG(options=DigitsDG.Options(per_class=n, cache_dir=tmp_path)) for n in (5, 6))
    def by_key(dataset, key):
        return [s for split in ("train", "val", "test") for s in dataset.samples("photo", split) if s.key == key]

    # image 3 is class 0's first val image at 5 per class, its fourth train image at 6: other pixels, one key
    first, second = by_key(small, "photo/00003"), by_key(larger, "photo/00003")
    assert first[0].key == second[0].key and first[0].version != second[0].version
    with FeatureCache(tmp_path) as cache:
        a = cache.get(tiny_backbone, small, "digits-dg", first, progress=False)
        b = cache.get(tiny_backbone, larger, "digits-dg", second, progress=False)
        assert sum(row["entries"] for row in cache.info()) == 2
    assert not torch.equal(a.features, b.features)
