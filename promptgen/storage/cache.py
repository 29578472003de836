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

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import struct
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterator, Sequence

import lmdb
import numpy as np
import torch

from promptgen.storage import lmdbcheck
from promptgen.toolkit.data import SampleImages, encode_batches
from promptgen.errors import CacheError, ConfigError
from promptgen.files import write_json
from promptgen.paths import cache_root, writable_dir
from promptgen.components.protocols import Backbone, Dataset
from promptgen.toolkit.values import FeatureSet, Sample

log = logging.getLogger(__name__)


class DamagedCacheError(CacheError):
    """The cache's file is damaged where LMDB cannot be trusted to read it: repair or clear it."""

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


MAX_WIDTH = 16384  # no feature is wider: a value longer than this allows is damaged, and never read


def decode_entry(value, dim: int | None = None) -> tuple[int, str, np.ndarray]:
    """(label, domain, feature [E] float16, a view of ``value``); ValueError if the bytes are not an intact entry.

    The length is checked before the bytes are read (against ``dim`` when known): a damaged length
    could otherwise send the read past the end of the file.
    """
    size = len(value)
    if size < _HEAD.size:
        raise ValueError(f"{size} bytes, shorter than the {_HEAD.size}-byte header")
    if size > _HEAD.size + 65535 + 2 * MAX_WIDTH:
        raise ValueError(f"{size} bytes, longer than any entry")
    label, length, crc = _HEAD.unpack_from(value)
    start = _HEAD.size + length
    if start > size or (size - start) % _FLOAT16.itemsize:
        raise ValueError(f"{size} bytes do not hold a {length}-byte domain and float16 values")
    if dim is not None and size - start != dim * _FLOAT16.itemsize:
        raise ValueError(f"feature has {(size - start) // _FLOAT16.itemsize} dims, expected {dim}")
    if zlib.crc32(memoryview(value)[_HEAD.size:], label & 0xFFFFFFFF) != crc:
        raise ValueError("checksum mismatch (the bytes were changed after they were written)")
    domain = bytes(value[_HEAD.size:start]).decode()
    return label, domain, np.frombuffer(value, _FLOAT16, offset=start)


def image_fingerprint(backbone: Backbone) -> str:
    """What keys a backbone's image features: its image tower's fingerprint where it has one (a retrained
    text tower then changes no image feature), else the fingerprint of all its weights."""
    return getattr(backbone, "image_fingerprint", None) or backbone.fingerprint


class FeatureCache:
    """Image features per (backbone fingerprint, transform, view, dataset, sample) in ``<root>/features.lmdb``.

    root: the cache root (default: $PROMPTGEN_CACHE_DIR, else ~/.cache/promptgen).
    map_size: the environment's starting size in bytes (it grows on demand); only the first
    FeatureCache of a directory in this process sets it.
    """

    def __init__(self, root: str | Path | None = None, *, map_size: int = DEFAULT_MAP_SIZE):
        self.path, self.env, self.readonly = _acquire(cache_root(root) / "features.lmdb", map_size)
        self.recomputed = 0  # damaged entries found by reads and computed again
        self.unstored = 0  # features computed but not stored (a read-only cache)

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
        fingerprint, transform = image_fingerprint(backbone), transform_id(backbone, train)
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
            if meta is not None and _embed_dim(meta) != dim:
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
            batch = encoded.detach().float().cpu().numpy().astype(_FLOAT16)
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
            start = stop
        if self.readonly and self.unstored:
            log.warning("feature cache %s is read-only: %d features computed for this run were not stored",
                        self.path, self.unstored)

    # --- inspection and maintenance ------------------------------------------------------------

    def info(self) -> list[dict]:
        """One row per (fingerprint, dataset, transform): entries, distinct views, bytes (keys + values)."""
        try:
            return self._info()
        except lmdb.Error as error:
            raise CacheError(f"the feature cache at {self.path} is damaged ({type(error).__name__}: {error}): run "
                             f"`promptgen cache verify --repair` or `promptgen cache clear --all`") from None

    def _info(self) -> list[dict]:
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
        """Problems, one line each: entries that fail their checksum, do not decode, differ in width from their
        backbone or are not finite, and damage to the database's own structure (pages it cannot read)."""
        return self._check()[0]

    def _check(self) -> tuple[list[str], list[bytes], bool]:
        """(problems, keys of bad entries, whether the structure is damaged)."""
        problems, bad, dims = [], [], {}
        try:
            with self._begin_read() as txn:
                for key, value in _scan(txn, META_TAG):
                    dim = _embed_dim(value)
                    if dim is None:
                        problems.append(f"{_show(key)}: metadata is not JSON with an integer embed_dim")
                        bad.append(key)
                    else:
                        dims[key[len(META_TAG):].decode(errors="replace")] = dim
                for key, value in _scan(txn):
                    if not key.startswith(META_TAG):
                        found = _entry_problems(key, value, dims)
                        problems.extend(found)
                        bad.extend([key] if found else [])
        except lmdb.Error as error:
            problems.append(f"the database's structure is damaged ({type(error).__name__}: {error}); entries past "
                            f"the damage cannot be read")
            return problems, bad, True
        return problems, bad, False

    def repair(self) -> dict:
        """Drop every bad entry; a damaged structure is rebuilt from the entries that can still be reached.

        Returns {"dropped": bad entries removed, "kept": entries kept, "rebuilt": whether the database was
        copied into a new file}. What is dropped is computed again when a run next needs it.
        """
        if self.readonly:
            raise CacheError(f"feature cache {self.path} is read-only: it cannot be repaired here")
        _, bad, damaged = self._check()
        if not damaged:
            self._write(lambda txn: [txn.delete(key) for key in bad])
            kept = sum(row["entries"] for row in self.info())
            return {"dropped": len(bad), "kept": kept, "rebuilt": False}
        with _OPEN_LOCK:  # rebuilt from the file's bytes, with this process's environment closed meanwhile
            if _OPEN[self.path][1] > 1:
                raise CacheError(f"feature cache {self.path} is open more than once in this process; close the "
                                 f"others before repairing it")
            self.env.close()
            del _OPEN[self.path]
        try:
            result = salvage_files(self.path.parent)
        finally:
            with _OPEN_LOCK:
                _OPEN[self.path] = [_open(self.path, DEFAULT_MAP_SIZE), 1, False]
                self.env = _OPEN[self.path][0]
        return {**result, "rebuilt": True}

    def merge_from(self, other: FeatureCache, batch: int = 4096) -> dict:
        """Copy every intact entry of ``other`` (a shard) into this cache, in transactions of ``batch`` entries.

        Each entry passes the checks ``verify`` applies (checksum, width, finite values) before it is
        copied; a bad one is left out (a later run computes it again). Returns {"copied", "damaged"}.
        """
        if self.readonly:
            raise CacheError(f"feature cache {self.path} is read-only: nothing can be merged into it here")
        problems, bad, damaged = other._check()
        if damaged:
            raise CacheError(f"shard {other.path}: {problems[-1]}; run `promptgen cache verify --repair --cache-dir "
                             f"{other.path.parent}` first")
        bad, copied = set(bad), 0
        with other._begin_read() as txn:
            pending = []
            for key, value in _scan(txn):
                if key in bad:
                    continue
                pending.append((key, bytes(value)))  # out of the read transaction's memory
                if len(pending) == batch:
                    copied += self._put_all(pending)
                    pending = []
            copied += self._put_all(pending)
        return {"copied": copied, "damaged": len(bad)}

    def _put_all(self, entries: list[tuple[bytes, bytes]]) -> int:
        self._write(lambda txn: [txn.put(key, value) for key, value in entries])
        return sum(key.startswith(FEATURE_TAG) for key, _ in entries)

    def clear(self, fingerprint: str | None = None, dataset: str | None = None) -> int:
        """Delete the feature entries whose fingerprint starts with ``fingerprint`` and whose dataset is ``dataset``
        (None: any); return how many. Without a dataset, the matching backbones' metadata goes too.
        The file keeps its size: LMDB reuses the freed pages for later entries."""

        def delete(txn) -> int:
            doomed = [key for key, _ in _scan(txn) if _matches(key, fingerprint, dataset)]
            for key in doomed:
                txn.delete(key)
            return sum(key.startswith(FEATURE_TAG) for key in doomed)

        if self.readonly:
            raise CacheError(f"feature cache {self.path} is read-only: nothing can be deleted from it here")
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
        """Run ``fill`` in one write transaction and commit; on a full map, double the map and run it again.

        A transaction that fails leaves every earlier commit as it was (LMDB never half-commits).
        """
        while True:
            try:
                with self.env.begin(write=True) as txn:  # commits on success, aborts on any exception
                    result = fill(txn)
                _record_state(self.path)
                return result
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
            except lmdb.Error as error:
                raise _write_error(self.path, error) from None


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
    except ValueError as error:
        return [f"{_show(key)}: not a feature key ({error})"]
    if fingerprint not in dims:
        return [f"{_show(key)}: no metadata (embed_dim) for backbone {fingerprint}"]
    try:
        feature = decode_entry(value, dims[fingerprint])[2]
    except ValueError as error:
        return [f"{_show(key)}: does not decode ({error})"]
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


def _acquire(path: Path, map_size: int) -> tuple[Path, lmdb.Environment, bool]:
    """The resolved path, its environment (opened on first use) and whether it is read-only."""
    with _OPEN_LOCK:
        readonly = False
        try:
            writable_dir(path, "feature cache")
        except ConfigError:
            if not (path / "data.mdb").is_file() or not os.access(path / "data.mdb", os.R_OK):
                raise
            readonly = True  # a complete cache we may not write still serves its features
        path = path.resolve()
        if path not in _OPEN:
            _OPEN[path] = [_open(path, map_size, readonly), 0, readonly]
        _OPEN[path][1] += 1
        return path, _OPEN[path][0], _OPEN[path][2]


def _release(path: Path) -> None:
    with _OPEN_LOCK:
        entry = _OPEN[path]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _OPEN[path]


def _open(path: Path, map_size: int, readonly: bool = False) -> lmdb.Environment:
    # lock=True: parallel jobs may share one cache, and LMDB's reader table is what keeps a writer
    # from reusing pages a reader still sees. info() and verify() read through this same
    # environment; a separate lock=False reader would be safe only while no process writes. A
    # read-only cache cannot hold a lock file: no one writes it, so reading without one is safe.
    if not _as_recorded(path):
        problem = lmdbcheck.problem(path / "data.mdb") or _emptied(path)
        if problem and not _as_recorded(path):  # (unless a writer of ours committed while it was read)
            raise DamagedCacheError(f"the feature cache at {path} is damaged: {problem}; run `promptgen cache verify "
                                    f"--repair` (keeps every intact entry) or `promptgen cache clear --all`")
    if not readonly:
        _reserve_lock_file(path)
    try:
        environment = lmdb.open(str(path), subdir=True, map_size=map_size, readahead=False, max_dbs=0,
                                lock=not readonly, readonly=readonly)
    except lmdb.Error as error:
        if _low_on_space(path):
            raise _no_space(path) from None
        damaged = (path / "data.mdb").is_file() and (path / "data.mdb").stat().st_size > 0
        raise (DamagedCacheError if damaged else CacheError)(
            f"cannot open the feature cache at {path}: {error}; run `promptgen cache verify --repair` (keeps every "
            f"intact entry) or `promptgen cache clear --all`, or choose another directory (--cache-dir)"
        ) from None
    if not readonly:
        _record_state(path)
    return environment


# The file's size and modification time after promptgen's last commit. A file found changed by anything
# else (a disk error, a copy, a stray write) is checked page by page (promptgen.storage.lmdbcheck) before it is
# mapped: LMDB trusts the sizes in its pages, and a damaged one can make it read past the end of the file,
# which kills the process with no message.
STATE = "promptgen-state.json"


def _file_state(path: Path) -> dict | None:
    try:
        stat = (path / "data.mdb").stat()
    except FileNotFoundError:
        return None
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _recorded_state(path: Path) -> dict | None:
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _as_recorded(path: Path) -> bool:
    state = _file_state(path)
    if state is None:
        return True  # nothing to read yet
    if state["bytes"] == 0:  # a file LMDB is creating this moment, unless promptgen had committed to it
        return not (_recorded_state(path) or {}).get("bytes")
    return _recorded_state(path) == state


def _emptied(path: Path) -> str | None:
    """Why an empty data.mdb is damage: promptgen had committed features to it (LMDB never empties its file)."""
    held = (_recorded_state(path) or {}).get("bytes")
    state = _file_state(path)
    if state is not None and state["bytes"] == 0 and held:
        return (f"data.mdb is empty (0 bytes) though it held {held:,} bytes after promptgen's last commit: it was "
                f"cut or replaced, and its features are gone")
    return None


def _record_state(path: Path) -> None:
    try:
        write_json(path / STATE, _file_state(path))
    except OSError:
        pass  # a read-only or full disk: the next open checks the file again, which is only slower


def salvage_files(root: str | Path | None = None) -> dict:
    """Rebuild a cache whose file LMDB must not map: every intact entry that sound pages still reach is copied
    into a fresh file, which takes the damaged one's place. Returns {"kept", "dropped"}."""
    path = (cache_root(root) / "features.lmdb").absolute()
    emptied = (path / "data.mdb").is_file() and (path / "data.mdb").stat().st_size == 0
    entries = [] if emptied else list(lmdbcheck.salvage(path / "data.mdb"))
    dims = {key[len(META_TAG):].decode(errors="replace"): _embed_dim(value) for key, value in entries
            if key.startswith(META_TAG) and _embed_dim(value) is not None}
    fresh_dir = path.with_name(path.name + ".rebuild")
    shutil.rmtree(fresh_dir, ignore_errors=True)
    fresh = lmdb.open(str(fresh_dir), subdir=True, map_size=DEFAULT_MAP_SIZE, readahead=False, max_dbs=0)
    kept = dropped = 0
    with fresh.begin(write=True) as txn:
        for key, value in entries:
            if key.startswith(META_TAG):
                if dims.get(key[len(META_TAG):].decode(errors="replace")) is not None:
                    txn.put(key, value)
            elif _entry_problems(key, value, dims):
                dropped += 1
            else:
                txn.put(key, value)
                kept += 1
    fresh.close()
    with _OPEN_LOCK:
        if path.resolve() in _OPEN:
            raise CacheError(f"feature cache {path} is open in this process; close it first")
        for name in ("data.mdb", "lock.mdb"):
            (path / name).unlink(missing_ok=True)
        os.replace(fresh_dir / "data.mdb", path / "data.mdb")
        shutil.rmtree(fresh_dir, ignore_errors=True)
    _record_state(path)
    return {"kept": kept, "dropped": dropped}


LOCK_FILE_BYTES = 8 * 2**10  # LMDB's reader table at its default 126 readers (a larger file would only hold more)


def _reserve_lock_file(path: Path) -> None:
    """Allocate lock.mdb's blocks before LMDB maps it. LMDB extends the file with ftruncate and writes it through
    the map: on a full disk that write has no block to land on, and the kernel kills the process (SIGBUS) with
    no message and the run's partial directory left behind. Allocated here, a full disk is an error we can name."""
    lock = path / "lock.mdb"
    created = not lock.exists()
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return  # LMDB opens it itself and reports what is wrong
    try:
        os.posix_fallocate(descriptor, 0, LOCK_FILE_BYTES)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            os.close(descriptor)
            descriptor = None
            if created:
                lock.unlink(missing_ok=True)
            raise _no_space(path) from None
        # a file system without fallocate: LMDB extends the file as before
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _low_on_space(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < 64 * 2**20
    except OSError:
        return False


def _no_space(path: Path) -> CacheError:
    try:
        free = f" ({shutil.disk_usage(path).free / 2**20:.1f} MiB free)"
    except OSError:
        free = ""
    return CacheError(f"no space left on the disk holding the feature cache {path}{free}: free some space or pass "
                      f"--cache-dir elsewhere; features already stored stay valid")


def _write_error(path: Path, error: lmdb.Error) -> CacheError:
    """A failed write: say 'disk full' when it is, else that the cache is damaged."""
    if _low_on_space(path):
        return _no_space(path)
    return CacheError(f"cannot write to the feature cache at {path} ({type(error).__name__}: {error}); features "
                      f"already stored stay valid: run `promptgen cache verify` to check it")


def clear_files(root: str | Path | None = None) -> Path:
    """Delete a cache's files, whatever state they are in (what `cache clear --all` falls back to)."""
    path = (cache_root(root) / "features.lmdb").absolute()
    with _OPEN_LOCK:
        if path.resolve() in _OPEN:
            raise CacheError(f"feature cache {path} is open in this process; close it first")
        for name in ("data.mdb", "lock.mdb"):
            try:
                (path / name).unlink(missing_ok=True)
            except OSError as error:
                raise CacheError(f"cannot delete {path / name}: {error.strerror or error}") from None
    return path
