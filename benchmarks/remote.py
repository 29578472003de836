"""A sweep whose jobs run on machines that share no disk with it (a launcher with ``shares_disk = False``: the ray
launcher on a cluster of nodes with their own disks). What travels, and which way (docs/distributed.md):

1. Features, once per cluster: the features the jobs read that this machine's cache lacks are extracted on the
   nodes in shards (promptgen.runs.extraction), and each shard's entries come back here, checked, into this
   machine's cache.
2. To the jobs: one pack of every feature the sweep reads (promptgen.storage.feature_pack), carried by the job
   function itself, which the launcher sends to each node once (Ray: its object store). Each job stores what its
   node's cache lacks (entries checked as every cache read checks them) and runs on that node's cache
   (``$PROMPTGEN_CACHE_DIR`` there, else ``~/.cache/promptgen``), in a scratch directory of the node's.
3. Back: the job's record with its run directory as a gzip'd tar; this machine unpacks it under --out (verified
   against its manifest, then moved into place whole) and writes the record, as benchmarks.records.run_jobs does
   for every launcher, so resume, --report and the tables read --out as always.
"""

from __future__ import annotations

import json
import socket
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import attrs

from benchmarks.records import Attempt, Job, failed
from promptgen.components.presets import preset_for_device, run_preset
from promptgen.paths import cache_root
from promptgen.runs import rundir
from promptgen.runs.extraction import ExtractJob, extract_elsewhere, planned_keys
from promptgen.storage import feature_pack
from promptgen.storage.cache import FeatureCache
from promptgen.storage.feature_pack import FeaturePack
from promptgen.toolkit.device import choose_device

ARCHIVE = "run_archive"  # the record's field that carries the run directory home (removed before it is written)


@attrs.frozen(eq=False)
class NodeJob:
    """One job on a node: its features stored into the node's cache, the job run in a scratch directory, its run
    directory packed into the record. Returns the record, ok or failed (benchmarks.records.Attempt), with where it
    ran (``node``: host and cache) and what travelled (``shipped``, bytes)."""

    fn: Callable[[Job], dict]  # benchmarks.sweep.JobRunner: its out and cache are replaced by the node's
    features: FeaturePack | None

    def __call__(self, job: Job) -> dict:
        node = {"host": socket.gethostname(), "cache": str(cache_root())}
        with tempfile.TemporaryDirectory(prefix=f"promptgen-job-{job.id}-") as scratch:
            record = Attempt(_OnNode(self.fn, self.features, Path(scratch)))(job)
        return {**record, "node": node}


@attrs.frozen(eq=False)
class _OnNode:
    fn: Callable[[Job], dict]
    features: FeaturePack | None
    scratch: Path

    def __call__(self, job: Job) -> dict:
        start = time.perf_counter()
        stored = {"copied": 0, "present": 0, "damaged": 0}
        if self.features is not None and len(self.features):
            with FeatureCache() as cache:
                stored = feature_pack.store(self.features, cache, "the sweep's feature pack")
        fill = round(time.perf_counter() - start, 3)
        result = attrs.evolve(self.fn, out=self.scratch, cache_dir=None)(job)
        archive = rundir.archive(Path(result["run_dir"]))
        shipped = {"features_bytes": self.features.nbytes if self.features is not None else 0,
                   "features_stored": stored["copied"], "features_damaged": stored["damaged"],
                   "features_fill_seconds": fill, "run_bytes": len(archive)}
        return {**result, ARCHIVE: archive, "shipped": shipped}


@attrs.frozen
class Elsewhere:
    """How a sweep runs on a launcher whose workers share no disk with it: each job as a :class:`NodeJob`
    carrying ``features``, and each record brought home under ``out``."""

    out: Path
    features: FeaturePack | None = None

    def attempt(self, fn: Callable[[Job], dict]) -> NodeJob:
        return NodeJob(fn, self.features)

    def bring_home(self, job: Job, record: dict) -> dict:
        """The record as this machine keeps it: its run directory unpacked under --out (replacing an older one),
        ``run_dir`` naming it there. A run that cannot be unpacked fails the job, saying why."""
        record = dict(record)
        archive = record.pop(ARCHIVE, None)
        if archive is None:
            return record
        run_dir = self.out / "runs" / job.id
        try:
            rundir.unarchive(archive, run_dir, f"the run directory of job {job.id} from {record.get('node')}")
        except Exception as error:  # the job's work is lost, not the sweep: its record says so and a rerun retries
            return {**failed(error), "node": record.get("node")}
        return {**record, "run_dir": str(run_dir)}


def extraction_jobs(jobs: Sequence[Job]) -> list[ExtractJob]:
    """One extraction per distinct (dataset, backbone, preset, settings, data root, views) that the jobs read:
    every feature a run of theirs can ask for (promptgen.runs.extraction). The preset is resolved on this machine's
    device: a driver without the nodes' GPU should pin --preset (docs/distributed.md)."""
    found: dict[str, ExtractJob] = {}
    for job in jobs:
        config = job.config
        preset = preset_for_device(config.preset, choose_device(config.backbone.device).type)
        views = config.views if config.views is not None else run_preset(preset)["views"]
        for name in dict.fromkeys(filter(None, (config.dataset, config.target_dataset))):
            extraction = ExtractJob(dataset=name, backbone=attrs.asdict(config.backbone), data_root=config.data_root,
                                    preset=preset, overrides=config.overrides,
                                    views=views if name == config.dataset else 1, progress=False)
            found.setdefault(json.dumps(attrs.asdict(extraction), sort_keys=True, default=str), extraction)
    return list(found.values())


def features_home(jobs: Sequence[Job], launcher, cache_dir: str | None, progress: bool = True) -> tuple[
        FeaturePack, dict]:
    """Every feature the jobs read, in this machine's cache and in one pack: where the cache lacks any of an
    extraction's, it runs on the launcher's workers in ``launcher.workers`` shards whose entries are stored here
    (promptgen.runs.extraction.extract_elsewhere). Returns the pack and what it took: {"planned", "extracted"
    (features the workers computed), "shards", "seconds", "pack_bytes"}."""
    start = time.perf_counter()
    planned = [(extraction, planned_keys(extraction))
               for extraction in (attrs.evolve(e, cache_dir=cache_dir) for e in extraction_jobs(jobs))]
    every = list(dict.fromkeys(key for _, keys in planned for key in keys))
    with FeatureCache(cache_dir) as cache:
        absent = set(feature_pack.missing(cache, every))
    lacking = [extraction for extraction, keys in planned if not absent.isdisjoint(keys)]
    shards = max(1, int(getattr(launcher, "workers", 1))) if lacking else 0
    work = [attrs.evolve(extraction, shard=index, shards=shards) for extraction in lacking for index in range(shards)]
    results = []
    if work:
        if progress:
            print(f"features: {len(absent)} of {len(every)} not in this machine's cache; extracting them on the workers "
                  f"in {len(work)} shards", flush=True)
        results, _ = extract_elsewhere(work, launcher, cache_dir)
    with FeatureCache(cache_dir) as cache:
        pack = feature_pack.pack(cache, every)
    cost = {"planned": len(every), "extracted": sum(result["encoded"] for result in results), "shards": len(work),
            "seconds": round(time.perf_counter() - start, 3), "pack_bytes": pack.nbytes}
    if progress:
        print(f"features: {pack.entries} in a {pack.nbytes / 2**20:.1f} MiB pack, sent once to each node "
              f"({cost['extracted']} extracted on the workers)", flush=True)
    return pack, cost
