"""Feature extraction ahead of the runs, in shards: processes, torchrun-style ranks and Ray tasks each write their
own LMDB, `promptgen cache merge` folds them into one cache equal to a single-process extraction, a killed
shard resumes where it stopped, and a damaged shard entry is left out and named."""

from __future__ import annotations

import attrs
import lmdb
import numpy as np
import pytest
from PIL import Image

from promptgen import cli
from promptgen.storage.cache import FeatureCache
from promptgen.storage.feature_format import decode_entry
from promptgen.storage.lmdb_env import scan
from promptgen.runs.extraction import ExtractJob, extract, merge, shard_dirs


def _entries(root) -> dict[bytes, bytes]:
    with FeatureCache(root) as cache, cache._begin_read() as txn:
        return {key: bytes(value) for key, value in scan(txn)}


def _same(a: dict[bytes, bytes], b: dict[bytes, bytes]) -> bool:
    """The same entries: keys, labels and domains exactly, features to float16 rounding (a batch of another size
    may round a feature's last bit differently)."""
    if a.keys() != b.keys():
        return False
    for key in a:
        if key.startswith(b"f2|"):
            (label_a, domain_a, feature_a), (label_b, domain_b, feature_b) = decode_entry(a[key]), decode_entry(b[key])
            if (label_a, domain_a) != (label_b, domain_b) or not np.allclose(feature_a, feature_b, atol=2e-3, rtol=0):
                return False
        elif a[key] != b[key]:
            return False
    return True


def _tree(root, domains: int, classes: int, per_class: int):
    """A DomainBed-layout tree of tiny PNGs: <root>/<domain>/<class>/<i>.png, each image its own colour."""
    rng = np.random.default_rng(0)
    for d in range(domains):
        for c in range(classes):
            folder = root / f"domain{d}" / f"class{c:03d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _extract(tree, cache, *extra) -> int:
    return cli.main(["cache", "extract", "--dataset", "folder", "--data-root", str(tree), "--cache-dir", str(cache),
                     "--views", "1", "--device", "cpu", "--quiet", "--set", "folder.check_images=false", *extra])


@pytest.mark.slow
def test_shards_from_processes_and_ray_tasks_merge_into_the_single_process_cache(tmp_path):
    """A 345-class, DomainNet-shaped tree of 20,700 images."""
    import time

    start = time.perf_counter()
    tree = _tree(tmp_path / "tree", domains=2, classes=345, per_class=30)
    print(f"tree: {time.perf_counter() - start:.0f} s")
    assert _extract(tree, tmp_path / "single") == 0
    print(f"single: {time.perf_counter() - start:.0f} s")
    single = _entries(tmp_path / "single")
    assert sum(b"|eval-" in key for key in single) == 20_700  # every image once with the eval transform

    assert _extract(tree, tmp_path / "processes", "--shards", "2", "--launcher-workers", "2") == 0
    assert _same(_entries(tmp_path / "processes"), single) and not shard_dirs(str(tmp_path / "processes"))
    print(f"processes: {time.perf_counter() - start:.0f} s")

    assert _extract(tree, tmp_path / "ray", "--shards", "2", "--launcher", "ray") == 0
    assert _same(_entries(tmp_path / "ray"), single)


@pytest.mark.slow
def test_torchrun_ranks_write_one_shard_each_and_merge_into_the_single_process_cache(tmp_path, monkeypatch):
    tree = _tree(tmp_path / "tree", domains=2, classes=4, per_class=10)
    assert _extract(tree, tmp_path / "single") == 0
    for rank in range(3):  # what torchrun's ranks do: each its own shard (RANK of WORLD_SIZE), then one merge
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "3")
        assert _extract(tree, tmp_path / "ranks") == 0
    assert len(shard_dirs(str(tmp_path / "ranks"))) == 3
    assert cli.main(["cache", "merge", "--cache-dir", str(tmp_path / "ranks")]) == 0
    assert _same(_entries(tmp_path / "ranks"), _entries(tmp_path / "single")) and not shard_dirs(str(tmp_path / "ranks"))


@pytest.mark.slow
def test_a_killed_shard_computes_only_what_it_lacks_when_run_again(tmp_path, monkeypatch):
    import promptgen.storage.cache as cache_module

    tree = _tree(tmp_path / "tree", domains=2, classes=3, per_class=20)
    job = ExtractJob(dataset="folder", backbone={"device": "cpu"}, cache_dir=str(tmp_path / "cache"),
                     data_root=str(tree), overrides={"folder": {"check_images": False}}, shard=1, shards=2,
                     batch_size=4, progress=False)
    real, encoded = cache_module.encode_batches, []

    def dies_after_three_batches(backbone, images, **options):
        for index, batch in enumerate(real(backbone, images, **options)):
            if index == 3:
                raise KeyboardInterrupt  # the worker is killed mid-split
            yield batch

    monkeypatch.setattr(cache_module, "encode_batches", dies_after_three_batches)
    with pytest.raises(KeyboardInterrupt):
        extract(job)
    (root,) = shard_dirs(job.cache_dir)
    partial = sum(key.startswith(b"f2|") for key in _entries(root))
    assert partial == 12  # three committed batches of 4

    def counting(backbone, images, **options):
        encoded.append(len(images))
        return real(backbone, images, **options)

    monkeypatch.setattr(cache_module, "encode_batches", counting)
    extract(job)
    after = sum(key.startswith(b"f2|") for key in _entries(root))
    assert sum(encoded) == after - partial  # only the missing entries were computed
    whole = attrs.evolve(job, cache_dir=str(tmp_path / "uninterrupted"))
    extract(whole)
    assert _same(_entries(root), _entries(shard_dirs(whole.cache_dir)[0]))  # as if it had never been killed


def test_merge_leaves_a_damaged_shard_entry_out_and_keeps_that_shard(tmp_path, capsys):
    tree = _tree(tmp_path / "tree", domains=2, classes=2, per_class=10)
    for shard in range(2):
        extract(ExtractJob(dataset="folder", backbone={"device": "cpu"}, cache_dir=str(tmp_path / "cache"),
                           data_root=str(tree), overrides={"folder": {"check_images": False}}, shard=shard, shards=2,
                           progress=False))
    first, second = shard_dirs(str(tmp_path / "cache"))
    env = lmdb.open(str(first / "features.lmdb"))
    with env.begin(write=True) as txn:
        key = next(k for k, _ in txn.cursor() if k.startswith(b"f2|"))
        txn.put(key, b"\x00" * 20)  # a torn write
    env.close()
    assert cli.main(["cache", "merge", "--cache-dir", str(tmp_path / "cache")]) == 1
    assert "1 damaged entries left out" in capsys.readouterr().out
    assert shard_dirs(str(tmp_path / "cache")) == [first]  # the damaged shard stays; the intact one is merged away
    merged = _entries(tmp_path / "cache")
    assert key not in merged and len([k for k in merged if k.startswith(b"f2|")]) > 0
    assert merge(str(tmp_path / "cache"), keep=True)["damaged"] == 1  # merging again is harmless


def test_a_bad_shard_spec_is_named(capsys):
    assert cli.main(["cache", "extract", "--shard", "2/2", "--quiet"]) == 2
    assert "shard must be I/N with 0 <= I < N, got 2/2" in capsys.readouterr().err
    assert cli.main(["cache", "extract", "--shard", "one", "--quiet"]) == 2
    assert "--shard must be I/N, got 'one'" in capsys.readouterr().err


def test_cache_extract_takes_the_runs_preset_so_it_extracts_the_samples_they_use(tmp_path, capsys):
    """`cache extract` builds the dataset as a run does (promptgen.components.resolve): with --preset gpu the
    official 70/30 split (train: round(0.7 n) of a class), with cpu the seeded 80/20 one; 2 train views each."""
    tree = _tree(tmp_path / "tree", domains=2, classes=2, per_class=10)
    counts = {}
    for preset in ("gpu", "cpu"):
        assert cli.main(["cache", "extract", "--dataset", "folder", "--data-root", str(tree), "--cache-dir",
                         str(tmp_path / preset), "--preset", preset, "--views", "2", "--device", "cpu",
                         "--set", "folder.check_images=false", "--quiet"]) == 0
        counts[preset] = int(capsys.readouterr().out.split(" features")[0].split()[-1])
    # 40 images; train views x train + val + test (a domain's train + val under both splits)
    assert counts == {"gpu": 2 * 28 + 12 + 40, "cpu": 2 * 32 + 8 + 40}
