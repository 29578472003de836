"""Feature extraction ahead of the runs, whole or in shards across processes, torchrun ranks or Ray tasks.

A run computes the features it needs on first use; for a large dataset (DomainNet: ~586k images)
that is better done once, up front, in parallel. ``promptgen cache extract`` computes every feature
a run of the dataset can ask for: each domain's train split (train transform, ``views`` views) and
its val and test splits (eval transform). With ``shard = I, shards = N`` a worker takes the samples
whose key hashes to I (mod N) and writes its **own** LMDB
(``<cache>/shards/<dataset>-<fingerprint>-of-<N>/<I>/``): one writer per database, which is what
LMDB on network storage needs. ``merge`` then folds the shards into the main cache, each entry
checked (checksum, width, finite) on the way. A shard commits every batch, so a killed worker loses
at most one batch: running its shard again computes only the entries it lacks. On workers that share no
disk with the caller (``extract_elsewhere``), each shard extracts into its node's own cache and its
entries come back in a pack, stored in the caller's cache as they arrive (docs/distributed.md).
"""

from __future__ import annotations

import logging
import shutil
import zlib
from pathlib import Path

import attrs

from promptgen.components.resolve import Settings, build
from promptgen.components.run_values import RunValues
from promptgen.storage import feature_pack
from promptgen.storage.cache import FeatureCache, feature_keys
from promptgen.storage.feature_format import image_fingerprint
from promptgen.runs.config import BackboneConfig
from promptgen.errors import CacheError, ConfigError
from promptgen.paths import cache_root

SPLITS = ("train", "val", "test")
log = logging.getLogger(__name__)


@attrs.frozen
class ExtractJob:
    """One shard of a dataset's features (``shards = 1``: all of them, straight into the main cache)."""

    dataset: str
    backbone: dict  # BackboneConfig fields
    cache_dir: str | None = None
    data_root: str | None = None
    preset: str = "cpu"  # the preset whose dataset options the runs use (the split, ...): promptgen.components.resolve
    overrides: dict = attrs.field(factory=dict)  # the runs' --set settings, by component name
    domains: tuple[str, ...] | None = None  # None: every domain
    views: int = 1
    shard: int = 0
    shards: int = 1
    batch_size: int = 128
    num_workers: int = 0
    progress: bool = True

    def __attrs_post_init__(self):
        if not (isinstance(self.shards, int) and self.shards >= 1 and 0 <= self.shard < self.shards):
            raise ConfigError(f"shard must be I/N with 0 <= I < N, got {self.shard}/{self.shards}")
        if self.views < 1:
            raise ConfigError(f"views must be >= 1, got {self.views}")


def shard_root(job: ExtractJob, fingerprint: str) -> Path:
    """Where shard ``job.shard`` of ``job.shards`` writes: its own cache root under the main cache's."""
    return cache_root(job.cache_dir) / "shards" / f"{job.dataset}-{fingerprint}-of-{job.shards}" / str(job.shard)


def _shard_of(key: str, shards: int) -> int:
    """A sample's shard, from its key: a sample in two splits (a domain's val and test) lands in one shard, so
    it is computed once."""
    return zlib.crc32(key.encode()) % shards


def _parts(dataset, job: ExtractJob):
    """(train transform?, views, samples of this shard) for every domain and split, in a fixed order."""
    domains = job.domains or dataset.domains
    unknown = set(domains) - set(dataset.domains)
    if unknown:
        raise ConfigError(f"unknown domains {sorted(unknown)} of {job.dataset}; domains: {', '.join(dataset.domains)}")
    for domain in domains:
        for split in SPLITS:
            samples = [s for s in dataset.samples(domain, split) if _shard_of(s.key, job.shards) == job.shard]
            train = split == "train"
            yield train, job.views if train else 1, samples


def _built(job: ExtractJob, registry):
    """The job's backbone and dataset, as a run builds them (promptgen.runs.engine.build_dataset): the same
    samples, split and all."""
    backbone_config = BackboneConfig(**job.backbone)
    settings = Settings(job.preset, job.dataset, job.overrides, backbone_config.options)
    backbone = backbone_config.build(registry, settings)
    dataset = build(registry, "dataset", job.dataset, settings,
                    RunValues(progress=job.progress, cache_dir=job.cache_dir), root=job.data_root)
    return backbone, dataset


def extract(job: ExtractJob, registry=None, *, pack: bool = False) -> dict:
    """Compute (or find) this shard's features; return {"root", "features", "samples", "encoded", "shard",
    "shards"} (features and samples as the splits ask for them: a sample in two splits, e.g. a domain's val and
    test, counts twice; encoded: the features computed here, the rest were in the cache).

    pack: for a node that shares no disk with whoever asked: the shard goes into this node's own cache (no shard
    directory: LMDB takes turns between the writers of a local disk, which it cannot do on network storage) and
    its entries come back as "pack" (promptgen.storage.feature_pack), to be stored where they are wanted."""
    from promptgen.components.registry import default_registry

    registry = registry or default_registry()
    backbone, dataset = _built(job, registry)
    root = shard_root(job, image_fingerprint(backbone)) if job.shards > 1 and not pack else cache_root(job.cache_dir)
    features = samples = 0
    keys = []
    with FeatureCache(root) as cache:
        for train, views, part in _parts(dataset, job):
            cache.get(backbone, dataset, job.dataset, part, train=train, views=views, batch_size=job.batch_size,
                      num_workers=job.num_workers, progress=job.progress)
            features, samples = features + views * len(part), samples + len(part)
            if pack:
                keys += feature_keys(backbone, job.dataset, part, train=train, views=views)
        result = {"root": str(root), "features": features, "samples": samples, "encoded": cache.encoded,
                  "shard": job.shard, "shards": job.shards}
        if pack:
            result["pack"] = feature_pack.pack(cache, keys)
    return result


def planned_keys(job: ExtractJob, registry=None) -> list[bytes]:
    """The cache keys of every feature this shard extracts (what a run of its dataset can ask for)."""
    from promptgen.components.registry import default_registry

    backbone, dataset = _built(job, registry or default_registry())
    return [key for train, views, part in _parts(dataset, job)
            for key in feature_keys(backbone, job.dataset, part, train=train, views=views)]


@attrs.frozen
class PackedShard:
    """``extract(job, pack=True)``: a shard run on a node that shares no disk with whoever asked for it (picklable:
    it travels to the node)."""

    def __call__(self, job: ExtractJob) -> dict:
        return extract(job, pack=True)


def extract_elsewhere(jobs: list[ExtractJob], launcher, cache_dir: str | None = None) -> tuple[list[dict], dict]:
    """Run extraction shards on a launcher whose workers share no disk with this process: each in its node's own
    cache, its entries brought back and stored in the cache here (each checked), as each shard finishes. A shard
    the launcher could not run stops the extraction, naming it (the shards stored so far stay).

    Returns (each shard's result, without its pack; {"copied", "present", "damaged"} summed over the shards)."""
    work = [attrs.evolve(job, cache_dir=None) for job in jobs]  # None: the node's own cache
    results: list[dict] = [{}] * len(work)
    totals = {"copied": 0, "present": 0, "damaged": 0}
    with FeatureCache(cache_dir) as cache:
        def done(index: int, result) -> None:
            job = work[index]
            name = f"extraction shard {job.shard}/{job.shards} of {job.dataset}"
            if isinstance(result, BaseException):
                raise CacheError(f"{name} could not run: {type(result).__name__}: {result}")
            stored = feature_pack.store(result.pop("pack"), cache, name)
            for key in totals:
                totals[key] += stored[key]
            results[index] = result
            if stored["damaged"]:
                log.warning("%s: %d damaged entries left out (a run computes them again)", name, stored["damaged"])

        launcher.run(PackedShard(), work, done=done)
    return results, totals


def shard_dirs(cache_dir: str | None = None) -> list[Path]:
    """Every shard's cache root under the main cache (``<cache>/shards/*/<I>/``), in order."""
    base = cache_root(cache_dir) / "shards"
    return sorted(path.parent for path in base.glob("*/*/features.lmdb")) if base.is_dir() else []


def merge(cache_dir: str | None = None, keep: bool = False) -> dict:
    """Fold every shard into the main cache; a shard is deleted once merged (unless ``keep``).

    Returns {"shards", "copied", "damaged"}. A shard with damaged entries is merged without them and
    kept, so that nothing is lost unseen.
    """
    shards, copied, damaged = shard_dirs(cache_dir), 0, 0
    with FeatureCache(cache_dir) as main:
        for root in shards:
            with FeatureCache(root) as shard:
                result = main.merge_from(shard)
            copied, damaged = copied + result["copied"], damaged + result["damaged"]
            if not keep and not result["damaged"]:
                shutil.rmtree(root)
    for group in {root.parent for root in shards}:
        if group.is_dir() and not any(group.iterdir()):
            group.rmdir()
    return {"shards": len(shards), "copied": copied, "damaged": damaged}
