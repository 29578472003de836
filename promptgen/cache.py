"""FeatureCache: frozen image-encoder features in one LMDB environment, computed once per (sample, view).

Keys are utf-8 bytes whose first field versions the layout:

    f2|<fingerprint>|<transform id>|<view>|<dataset name>|<sample version>|<sample key>   one feature
    m1|<fingerprint>                                                                     JSON {"embed_dim": E}

The sample key comes last, so it may itself contain "|"; the sample version is the image's content
identity (a changed image gets a new key). A feature entry's value is the label (int32), the
domain's byte length (uint16), a CRC-32 of everything after the header (uint32), the domain (utf-8)
and the L2-normalised feature (float16), little-endian. Every read checks the CRC, the width and
that the values are finite: a damaged entry is never used, but computed again, stored over the bad
one, and counted (``FeatureCache.recomputed``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import struct
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterator, Sequence

import lmdb
import numpy as np
import torch

from promptgen.data import SampleImages, encode_batches
from promptgen.errors import CacheError, ConfigError
from promptgen.paths import cache_root, writable_dir
from promptgen.protocols import Backbone, Dataset
from promptgen.values import FeatureSet, Sample

log = logging.getLogger(__name__)

FEATURE_TAG = b"f2|"
META_TAG = b"m1|"
DEFAULT_MAP_SIZE = 256 * 2**20  # a start: doubled whenever a write finds the map full
_HEAD = struct.Struct("<iHI")  # label, byte length of the domain name, CRC-32 of the rest
_FLOAT16 = np.dtype("<f2")

# LMDB must not have one environment open twice in a process (it can corrupt the file), so every
# FeatureCache on the same directory shares one Environment, closed when the last one closes.
_OPEN: dict[Path, list] = {}  # path -> [environment, number of FeatureCache objects using it]
_OPEN_LOCK = threading.Lock()


def transform_id(backbone: Backbone, train: bool) -> str:
    """'train-' or 'eval-' + a short hash of that transform's repr (memory addresses removed).

    Both transforms are part of what a feature is: two backbones with the same weights but other
    preprocessing (image size, crop, normalisation) must not share entries.
    """
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(backbone.image_transform(train)))
    return ("train-" if train else "eval-") + hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def feature_key(fingerprint: str, transform: str, view: int, dataset_name: str, sample_key: str,
                version: str = "") -> bytes:
    return FEATURE_TAG + f"{fingerprint}|{transform}|{view}|{dataset_name}|{version}|{sample_key}".encode()


def parse_feature_key(key: bytes) -> tuple[str, str, int, str, str, str]:
    """(fingerprint, transform id, view, dataset name, sample version, sample key); ValueError if not one."""
    fields = key[len(FEATURE_TAG):].decode().split("|", 5) if key.startswith(FEATURE_TAG) else []
    if len(fields) != 6:
        raise ValueError("not a feature key")
    fingerprint, transform, view, dataset_name, version, sample_key = fields
    return fingerprint, transform, int(view), dataset_name, version, sample_key


def encode_entry(label: int, domain: str, feature: np.ndarray) -> bytes:
    body = domain.encode() + feature.astype(_FLOAT16).tobytes()
    return _HEAD.pack(label, len(domain.encode()), zlib.crc32(body, label & 0xFFFFFFFF)) + body


def decode_entry(value) -> tuple[int, str, np.ndarray]:
    """(label, domain, feature [E] float16, a view of ``value``); ValueError if the bytes are not an intact entry."""
    if len(value) < _HEAD.size:
        raise ValueError(f"{len(value)} bytes, shorter than the {_HEAD.size}-byte header")
    label, length, crc = _HEAD.unpack_from(value)
    start = _HEAD.size + length
    if start > len(value) or (len(value) - start) % _FLOAT16.itemsize:
        raise ValueError(f"{len(value)} bytes do not hold a {length}-byte domain and float16 values")
    if zlib.crc32(memoryview(value)[_HEAD.size:], label & 0xFFFFFFFF) != crc:
        raise ValueError("checksum mismatch (the bytes were changed after they were written)")
    domain = bytes(value[_HEAD.size:start]).decode()
    return label, domain, np.frombuffer(value, _FLOAT16, offset=start)


class FeatureCache:
    """Image features per (backbone fingerprint, transform, view, dataset, sample) in ``<root>/features.lmdb``.

    root: the cache root (default: $PROMPTGEN_CACHE_DIR, else ~/.cache/promptgen).
    map_size: the environment's starting size in bytes (it grows on demand); only the first
    FeatureCache of a directory in this process sets it.
    """

    def __init__(self, root: str | Path | None = None, *, map_size: int = DEFAULT_MAP_SIZE):
        self.path, self.env = _acquire(cache_root(root) / "features.lmdb", map_size)
        self.recomputed = 0  # damaged entries found by reads and computed again

    def close(self) -> None:
        if self.env is not None:
            _release(self.path)
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
        fingerprint, transform = backbone.fingerprint, transform_id(backbone, train)
        for what, name in (("backbone fingerprint", fingerprint), ("dataset name", dataset_name)):
            if "|" in name:
                raise CacheError(f"feature cache: the {what} {name!r} contains '|', which separates key fields")
        domain_ids = _domain_ids(dataset, samples)
        pairs = [(view, sample) for view in range(views) for sample in samples]
        for sample in samples:
            if "|" in sample.version:
                raise CacheError(f"feature cache: {dataset_name} sample {sample.key!r} has a version with '|' "
                                 f"({sample.version!r}), which separates key fields")
        keys = [feature_key(fingerprint, transform, view, dataset_name, s.key, s.version) for view, s in pairs]
        features = np.empty((len(keys), backbone.embed_dim), np.float32)
        missing = self._read(keys, features, fingerprint)
        if missing:
            todo = [pairs[row] for row in missing]
            images = SampleImages(dataset, [s for _, s in todo], backbone.image_transform(train), [v for v, _ in todo])
            desc = f"caching {dataset_name} features ({transform}, {len(missing)} new)"
            self._encode(backbone, images, [keys[row] for row in missing], missing, features,
                         batch_size=batch_size, num_workers=num_workers, progress=progress, desc=desc)
        labels = torch.tensor([s.label for s in samples], dtype=torch.long).repeat(views)
        return FeatureSet(torch.from_numpy(features), labels, torch.tensor(domain_ids, dtype=torch.long).repeat(views))

    def _read(self, keys: list[bytes], out: np.ndarray, fingerprint: str) -> list[int]:
        """Fill the rows of ``out`` [len(keys), E] found intact in the cache; return the other rows' indices.

        An entry that fails its checks (checksum, width, finite values) is treated as missing: it is
        computed again and overwritten, and counted in ``self.recomputed``.
        """
        dim, missing, damaged = out.shape[1], [], 0
        with self._begin_read() as txn:
            meta = txn.get(META_TAG + fingerprint.encode())
            if meta is not None and _embed_dim(meta) != dim:
                raise CacheError(f"feature cache {self.path}: entries of {fingerprint} are not {dim}-dimensional; "
                                 f"run `promptgen cache clear --backbone {fingerprint}`")
            for row, key in enumerate(keys):
                value = txn.get(key)
                if value is None:
                    missing.append(row)
                    continue
                try:
                    feature = decode_entry(value)[2]
                    if len(feature) != dim or not np.isfinite(feature).all():
                        raise ValueError("wrong width or non-finite values")
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
        meta_key = META_TAG + backbone.fingerprint.encode()
        meta = json.dumps({"embed_dim": out.shape[1]}).encode()
        start = 0
        batches = encode_batches(backbone, images, batch_size=batch_size, num_workers=num_workers, progress=progress,
                                 desc=desc)
        for encoded, _, _ in batches:
            batch = encoded.detach().float().cpu().numpy().astype(_FLOAT16)
            stop = start + len(batch)
            entries = [(keys[i], encode_entry(images.samples[i].label, images.samples[i].domain, batch[i - start]))
                       for i in range(start, stop)]

            def put(txn, entries=entries):
                txn.put(meta_key, meta)
                for key, value in entries:
                    txn.put(key, value)

            self._write(put)
            out[rows[start:stop]] = batch  # the stored float16 values: a later cache hit returns exactly these
            start = stop

    # --- inspection and maintenance ------------------------------------------------------------

    def info(self) -> list[dict]:
        """One row per (fingerprint, dataset, transform): entries, distinct views, bytes (keys + values)."""
        groups: dict[tuple, dict] = {}
        with self._begin_read() as txn:
            for key, value in _scan(txn, FEATURE_TAG):
                try:
                    fingerprint, transform, view, dataset_name, _, _ = parse_feature_key(key)
                except ValueError:
                    continue  # verify() reports it
                row = groups.setdefault((fingerprint, dataset_name, transform), {
                    "fingerprint": fingerprint, "dataset": dataset_name, "transform": transform,
                    "entries": 0, "views": set(), "bytes": 0,
                })
                row["entries"] += 1
                row["views"].add(view)
                row["bytes"] += len(key) + len(value)
        return [{**row, "views": len(row["views"])} for _, row in sorted(groups.items())]

    def verify(self) -> list[str]:
        """Problems, one line each: entries that do not decode, differ in dim from their backbone, or are not finite."""
        problems, dims = [], {}
        with self._begin_read() as txn:
            for key, value in _scan(txn, META_TAG):
                dim = _embed_dim(value)
                if dim is None:
                    problems.append(f"{_show(key)}: metadata is not JSON with an integer embed_dim")
                else:
                    dims[key[len(META_TAG):].decode(errors="replace")] = dim
            for key, value in _scan(txn):
                if not key.startswith(META_TAG):
                    problems.extend(_entry_problems(key, value, dims))
        return problems

    def clear(self, fingerprint: str | None = None, dataset: str | None = None) -> int:
        """Delete the feature entries whose fingerprint starts with ``fingerprint`` and whose dataset is ``dataset``
        (None: any); return how many. Without a dataset, the matching backbones' metadata goes too.
        The file keeps its size: LMDB reuses the freed pages for later entries."""

        def delete(txn) -> int:
            doomed = [key for key, _ in _scan(txn) if _matches(key, fingerprint, dataset)]
            for key in doomed:
                txn.delete(key)
            return sum(key.startswith(FEATURE_TAG) for key in doomed)

        return self._write(delete)

    # --- transactions --------------------------------------------------------------------------

    def _begin_read(self) -> lmdb.Transaction:
        # buffers=True: values are views into the map, valid only inside the transaction (no copies).
        try:
            return self.env.begin(buffers=True)
        except lmdb.MapResizedError:  # another process grew the map: adopt its size
            self.env.set_mapsize(0)
            return self.env.begin(buffers=True)

    def _write(self, fill: Callable[[lmdb.Transaction], object]):
        """Run ``fill`` in one write transaction and commit; on a full map, double the map and run it again."""
        while True:
            try:
                with self.env.begin(write=True) as txn:  # commits on success, aborts on any exception
                    return fill(txn)
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)


def _domain_ids(dataset: Dataset, samples: Sequence[Sample]) -> list[int]:
    index = {domain: i for i, domain in enumerate(dataset.domains)}
    unknown = {s.domain for s in samples} - index.keys()
    if unknown:
        raise ConfigError(f"samples of domains {sorted(unknown)} are not among the dataset's domains "
                          f"{list(dataset.domains)}")
    return [index[s.domain] for s in samples]


def _embed_dim(meta) -> int | None:
    try:
        dim = json.loads(bytes(meta))["embed_dim"]
    except (ValueError, KeyError, TypeError):
        return None
    return dim if isinstance(dim, int) else None


def _entry_problems(key: bytes, value, dims: dict[str, int]) -> list[str]:
    try:
        fingerprint = parse_feature_key(key)[0]
        feature = decode_entry(value)[2]
    except ValueError as error:
        return [f"{_show(key)}: does not decode ({error})"]
    if fingerprint not in dims:
        return [f"{_show(key)}: no metadata (embed_dim) for backbone {fingerprint}"]
    if len(feature) != dims[fingerprint]:
        return [f"{_show(key)}: feature has {len(feature)} dims, backbone {fingerprint} has {dims[fingerprint]}"]
    if not np.isfinite(feature).all():
        return [f"{_show(key)}: feature has non-finite values"]
    return []


def _matches(key: bytes, fingerprint: str | None, dataset: str | None) -> bool:
    if key.startswith(META_TAG):
        return dataset is None and key[len(META_TAG):].decode(errors="replace").startswith(fingerprint or "")
    try:
        key_fingerprint, _, _, key_dataset, _, _ = parse_feature_key(key)
    except ValueError:
        return fingerprint is None and dataset is None  # unreadable keys go only when everything goes
    return key_fingerprint.startswith(fingerprint or "") and dataset in (None, key_dataset)


def _scan(txn: lmdb.Transaction, prefix: bytes = b"") -> Iterator[tuple[bytes, object]]:
    """(key, value) of every entry whose key starts with ``prefix``, in key order."""
    cursor = txn.cursor()
    if not cursor.set_range(prefix):
        return
    for key, value in cursor.iternext():
        key = bytes(key)
        if not key.startswith(prefix):
            return
        yield key, value


def _show(key: bytes) -> str:
    return repr(key.decode(errors="replace"))


def _acquire(path: Path, map_size: int) -> tuple[Path, lmdb.Environment]:
    """The resolved path and its environment, opened on first use."""
    with _OPEN_LOCK:
        try:
            writable_dir(path, "feature cache")
        except ConfigError as error:
            raise CacheError(str(error)) from None
        path = path.resolve()
        if path not in _OPEN:
            _OPEN[path] = [_open(path, map_size), 0]
        _OPEN[path][1] += 1
        return path, _OPEN[path][0]


def _release(path: Path) -> None:
    with _OPEN_LOCK:
        entry = _OPEN[path]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _OPEN[path]


def _open(path: Path, map_size: int) -> lmdb.Environment:
    # lock=True: parallel jobs may share one cache, and LMDB's reader table is what keeps a writer
    # from reusing pages a reader still sees. info() and verify() read through this same
    # environment; a separate lock=False reader would be safe only while no process writes.
    try:
        return lmdb.open(str(path), subdir=True, map_size=map_size, readahead=False, max_dbs=0, lock=True)
    except lmdb.Error as error:
        raise CacheError(
            f"cannot open the feature cache at {path}: {error}; choose another directory (--cache-dir or "
            "$PROMPTGEN_CACHE_DIR) or remove it to start afresh"
        ) from None
