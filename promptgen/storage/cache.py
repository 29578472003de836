"""FeatureCache: frozen image-encoder features in one LMDB environment, computed once per (sample, view).

What a key and an entry hold is promptgen.storage.feature_format; the environment, its transactions and the
errors a disk can give, promptgen.storage.lmdb_env; info, verify, repair, merge and clear,
promptgen.storage.cache_maintenance. Every read checks an entry before using it: a damaged entry is computed
again, stored over the bad one, and counted (``FeatureCache.recomputed``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import lmdb
import numpy as np
import torch

from promptgen.components.protocols import Backbone, Dataset
from promptgen.errors import CacheError, ConfigError
from promptgen.paths import cache_root
from promptgen.storage import cache_maintenance, lmdb_env
from promptgen.storage.feature_format import FLOAT16, META_TAG, decode_entry, embed_dim, encode_entry, feature_key, \
    image_fingerprint, transform_id
from promptgen.storage.lmdb_env import DEFAULT_MAP_SIZE
from promptgen.toolkit.data import SampleImages, encode_batches
from promptgen.values import FeatureSet, Sample

log = logging.getLogger(__name__)


class FeatureCache:
    """Image features per (backbone fingerprint, transform, view, dataset, sample) in ``<root>/features.lmdb``.

    root: the cache root (default: $PROMPTGEN_CACHE_DIR, else ~/.cache/promptgen).
    map_size: the environment's starting size in bytes (it grows on demand); only the first
    FeatureCache of a directory in this process sets it.
    """

    def __init__(self, root: str | Path | None = None, *, map_size: int = DEFAULT_MAP_SIZE):
        self.path, self.env, self.readonly = lmdb_env.acquire(cache_root(root) / "features.lmdb", map_size)
        self.recomputed = 0  # damaged entries found by reads and computed again
        self.unstored = 0  # features computed but not stored (a read-only cache)
        self.encoded = 0  # features this object computed with the image encoder (the rest were read)

    def close(self) -> None:
        if self.env is not None:
            lmdb_env.release(self.path)
            self.env = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r})"

    # --- features ------------------------------------------------------------------------------

    def get(
        self,
        backbone: Backbone,
        dataset: Dataset,
        dataset_name: str,
        samples: Sequence[Sample],
        *,
        train: bool = False,
        views: int = 1,
        batch_size: int = 128,
        num_workers: int = 0,
        progress: bool = True,
    ) -> FeatureSet:
        """Features of every (view, sample); only the missing ones are computed, and stored.

        Returns features [views*N, E] float32 (row v*N + i is view v of sample i; eval: N rows, view 0),
        labels [views*N] and domain_ids [views*N] (the index of the sample's domain in ``dataset.domains``).
        A train view is the train transform seeded by (sample key, view): the same pixels in every run.
        Each encoded batch is committed in its own transaction, so an interrupted call loses at most
        the batch in flight and the next call continues from there.
        """
        if views < 1 or (not train and views != 1):
            raise ConfigError(f"FeatureCache.get: views must be >= 1, and 1 for the eval transform; got {views}")
        domain_ids = _domain_ids(dataset, samples)
        pairs = [(view, sample) for view in range(views) for sample in samples]
        keys = feature_keys(backbone, dataset_name, samples, train=train, views=views)
        fingerprint = image_fingerprint(backbone)
        features = np.empty((len(keys), backbone.embed_dim), np.float32)
        missing = self._read(keys, features, fingerprint)
        if missing:
            todo = [pairs[row] for row in missing]
            images = SampleImages(dataset, [s for _, s in todo], backbone.image_transform(train), [v for v, _ in todo])
            desc = f"caching {dataset_name} features ({transform_id(backbone, train)}, {len(missing)} new)"
            self._encode(backbone, images, [keys[row] for row in missing], missing, features,
                         batch_size=batch_size, num_workers=num_workers, progress=progress, desc=desc)
        labels = torch.tensor([s.label for s in samples], dtype=torch.long).repeat(views)
        return FeatureSet(torch.from_numpy(features), labels, torch.tensor(domain_ids, dtype=torch.long).repeat(views),
                          image_ids=torch.arange(len(samples)).repeat(views))  # row v*N + i: a view of image i

    def _read(self, keys: list[bytes], out: np.ndarray, fingerprint: str) -> list[int]:
        try:
            return self._read_entries(keys, out, fingerprint)
        except lmdb.Error as error:
            raise CacheError(f"the feature cache at {self.path} is damaged ({type(error).__name__}: {error}): run "
                             f"`promptgen cache verify --repair` (keeps every readable entry) or `promptgen cache "
                             f"clear --all`") from None

    def _read_entries(self, keys: list[bytes], out: np.ndarray, fingerprint: str) -> list[int]:
        """Fill the rows of ``out`` [len(keys), E] found intact in the cache; return the other rows' indices.

        An entry that fails its checks (checksum, width, finite values) is treated as missing: it is
        computed again and overwritten, and counted in ``self.recomputed``.
        """
        dim, missing, damaged = out.shape[1], [], 0
        with self._begin_read() as txn:
            meta = txn.get(META_TAG + fingerprint.encode())
            if meta is not None and embed_dim(meta) != dim:
                raise CacheError(f"feature cache {self.path}: entries of {fingerprint} are not {dim}-dimensional; "
                                 f"run `promptgen cache clear --backbone {fingerprint}`")
            for row, key in enumerate(keys):
                value = txn.get(key)
                if value is None:
                    missing.append(row)
                    continue
                try:
                    feature = decode_entry(value, dim)[2]
                    if not np.isfinite(feature).all():
                        raise ValueError("non-finite values")
                    out[row] = feature  # copies out of the transaction's memory before it ends
                except ValueError:
                    missing.append(row)
                    damaged += 1
        if damaged:
            self.recomputed += damaged
            log.warning("feature cache %s: %d damaged entr%s found; computing %s again", self.path, damaged,
                        "y" if damaged == 1 else "ies", "it" if damaged == 1 else "them")
        return missing

    def _encode(self, backbone, images: SampleImages, keys, rows, out, *, batch_size, num_workers, progress, desc):
        """Encode ``images`` into ``out[rows]`` batch by batch, committing each batch in one write transaction."""
        meta_key = META_TAG + image_fingerprint(backbone).encode()
        meta = json.dumps({"embed_dim": out.shape[1]}).encode()
        start = 0
        batches = encode_batches(backbone, images, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                 desc=desc)
        for encoded, _, _ in batches:
            batch = encoded.detach().float().cpu().numpy().astype(FLOAT16)
            stop = start + len(batch)
            entries = [(keys[i], encode_entry(images.samples[i].label, images.samples[i].domain, batch[i - start]))
                       for i in range(start, stop)]

            def put(txn, entries=entries):
                txn.put(meta_key, meta)
                for key, value in entries:
                    txn.put(key, value)

            if self.readonly:
                self.unstored += len(entries)
            else:
                self._write(put)
            out[rows[start:stop]] = batch  # the stored float16 values: a later cache hit returns exactly these
            self.encoded += len(batch)
            start = stop
        if self.readonly and self.unstored:
            log.warning("feature cache %s is read-only: %d features computed for this run were not stored",
                        self.path, self.unstored)

    # --- inspection and maintenance (promptgen.storage.cache_maintenance) ---------------------------

    def info(self) -> list[dict]:
        """One row per (fingerprint, dataset, transform): entries, distinct views, bytes (keys + values)."""
        return cache_maintenance.info(self)

    def verify(self) -> list[str]:
        """Problems, one line each: entries that fail their checksum, do not decode, differ in width from their
        backbone or are not finite, and damage to the database's own structure (pages it cannot read)."""
        return cache_maintenance.check(self)[0]

    def repair(self) -> dict:
        """Drop every bad entry; a damaged structure is rebuilt from the entries that can still be reached.

        Returns {"dropped": bad entries removed, "kept": entries kept, "rebuilt": whether the database was
        copied into a new file}. What is dropped is computed again when a run next needs it.
        """
        return cache_maintenance.repair(self)

    def merge_from(self, other: FeatureCache, batch: int = 4096) -> dict:
        """Copy every intact entry of ``other`` (a shard) into this cache, in transactions of ``batch`` entries.

        Each entry passes the checks ``verify`` applies (checksum, width, finite values) before it is
        copied; a bad one is left out (a later run computes it again). Returns {"copied", "damaged"}.
        """
        return cache_maintenance.merge(self, other, batch)

    def clear(self, fingerprint: str | None = None, dataset: str | None = None) -> int:
        """Delete the feature entries whose fingerprint starts with ``fingerprint`` and whose dataset is ``dataset``
        (None: any); return how many. Without a dataset, the matching backbones' metadata goes too.
        The file keeps its size: LMDB reuses the freed pages for later entries."""
        return cache_maintenance.clear(self, fingerprint, dataset)

    # --- transactions (promptgen.storage.lmdb_env) -------------------------------------------------

    def _begin_read(self) -> lmdb.Transaction:
        return lmdb_env.begin_read(self.env)

    def _write(self, fill: Callable[[lmdb.Transaction], object]):
        """Run ``fill`` in one write transaction and commit (the map grows when full); its result."""
        return lmdb_env.write(self.env, self.path, fill)


def feature_keys(backbone: Backbone, dataset_name: str, samples: Sequence[Sample], *, train: bool = False,
                 views: int = 1) -> list[bytes]:
    """The cache keys of every (view, sample), view-major: what :meth:`FeatureCache.get` reads or computes."""
    fingerprint, transform = image_fingerprint(backbone), transform_id(backbone, train)
    for what, name in (("backbone fingerprint", fingerprint), ("dataset name", dataset_name)):
        if "|" in name:
            raise CacheError(f"feature cache: the {what} {name!r} contains '|', which separates key fields")
    for sample in samples:
        if "|" in sample.version:
            raise CacheError(f"feature cache: {dataset_name} sample {sample.key!r} has a version with '|' "
                             f"({sample.version!r}), which separates key fields")
    return [feature_key(fingerprint, transform, view, dataset_name, s.key, s.version)
            for view in range(views) for s in samples]


def _domain_ids(dataset: Dataset, samples: Sequence[Sample]) -> list[int]:
    index = {domain: i for i, domain in enumerate(dataset.domains)}
    unknown = {s.domain for s in samples} - index.keys()
    if unknown:
        raise ConfigError(f"samples of domains {sorted(unknown)} are not among the dataset's domains "
                          f"{list(dataset.domains)}")
    return [index[s.domain] for s in samples]
