"""Looking after a feature cache: what it holds, damaged entries found and dropped, shards merged, entries cleared.

FeatureCache's info, verify, repair, merge_from and clear call these; ``salvage_files`` and ``clear_files``
work on a cache's files alone, for a file LMDB must not map (``DamagedCacheError``) or that cannot be opened.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import lmdb

from promptgen.errors import CacheError
from promptgen.paths import cache_root
from promptgen.storage import lmdbcheck
from promptgen.storage.feature_format import FEATURE_TAG, META_TAG, embed_dim, entry_problems, parse_feature_key, \
    show_key
from promptgen.storage.lmdb_env import DEFAULT_MAP_SIZE, OpenCache, begin_read, closed_for_rebuild, record_state, \
    scan, unopened, write


def info(cache: OpenCache) -> list[dict]:
    """FeatureCache.info: one row per (fingerprint, dataset, transform)."""
    try:
        return _info(cache)
    except lmdb.Error as error:
        raise CacheError(f"the feature cache at {cache.path} is damaged ({type(error).__name__}: {error}): run "
                         f"`promptgen cache verify --repair` or `promptgen cache clear --all`") from None


def _info(cache: OpenCache) -> list[dict]:
    groups: dict[tuple, dict] = {}
    with begin_read(cache.env) as txn:
        for key, value in scan(txn, FEATURE_TAG):
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


def check(cache: OpenCache) -> tuple[list[str], list[bytes], bool]:
    """(problems, keys of bad entries, whether the structure is damaged): what ``verify`` reports."""
    problems, bad, dims = [], [], {}
    try:
        with begin_read(cache.env) as txn:
            for key, value in scan(txn, META_TAG):
                dim = embed_dim(value)
                if dim is None:
                    problems.append(f"{show_key(key)}: metadata is not JSON with an integer embed_dim")
                    bad.append(key)
                else:
                    dims[key[len(META_TAG):].decode(errors="replace")] = dim
            for key, value in scan(txn):
                if not key.startswith(META_TAG):
                    found = entry_problems(key, value, dims)
                    problems.extend(found)
                    bad.extend([key] if found else [])
    except lmdb.Error as error:
        problems.append(f"the database's structure is damaged ({type(error).__name__}: {error}); entries past "
                        f"the damage cannot be read")
        return problems, bad, True
    return problems, bad, False


def repair(cache: OpenCache) -> dict:
    """FeatureCache.repair: bad entries dropped; a damaged structure rebuilt from what can still be reached."""
    if cache.readonly:
        raise CacheError(f"feature cache {cache.path} is read-only: it cannot be repaired here")
    _, bad, damaged = check(cache)
    if not damaged:
        write(cache.env, cache.path, lambda txn: [txn.delete(key) for key in bad])
        kept = sum(row["entries"] for row in info(cache))
        return {"dropped": len(bad), "kept": kept, "rebuilt": False}
    with closed_for_rebuild(cache):  # rebuilt from the file's bytes, with this process's environment closed
        result = salvage_files(cache.path.parent)
    return {**result, "rebuilt": True}


def merge(cache: OpenCache, shard: OpenCache, batch: int = 4096) -> dict:
    """FeatureCache.merge_from: every entry of ``shard`` that passes ``check`` copied into ``cache``."""
    if cache.readonly:
        raise CacheError(f"feature cache {cache.path} is read-only: nothing can be merged into it here")
    problems, bad, damaged = check(shard)
    if damaged:
        raise CacheError(f"shard {shard.path}: {problems[-1]}; run `promptgen cache verify --repair --cache-dir "
                         f"{shard.path.parent}` first")
    bad, copied = set(bad), 0
    with begin_read(shard.env) as txn:
        pending = []
        for key, value in scan(txn):
            if key in bad:
                continue
            pending.append((key, bytes(value)))  # out of the read transaction's memory
            if len(pending) == batch:
                copied += put_all(cache, pending)
                pending = []
        copied += put_all(cache, pending)
    return {"copied": copied, "damaged": len(bad)}


def put_all(cache: OpenCache, entries: list[tuple[bytes, bytes]]) -> int:
    """Write ``entries`` in one transaction; how many of them are features (merge, feature_pack.store)."""
    write(cache.env, cache.path, lambda txn: [txn.put(key, value) for key, value in entries])
    return sum(key.startswith(FEATURE_TAG) for key, _ in entries)


def clear(cache: OpenCache, fingerprint: str | None = None, dataset: str | None = None) -> int:
    """FeatureCache.clear: the matching entries deleted; how many features went."""

    def delete(txn) -> int:
        doomed = [key for key, _ in scan(txn) if _matches(key, fingerprint, dataset)]
        for key in doomed:
            txn.delete(key)
        return sum(key.startswith(FEATURE_TAG) for key in doomed)

    if cache.readonly:
        raise CacheError(f"feature cache {cache.path} is read-only: nothing can be deleted from it here")
    return write(cache.env, cache.path, delete)


def _matches(key: bytes, fingerprint: str | None, dataset: str | None) -> bool:
    if key.startswith(META_TAG):
        return dataset is None and key[len(META_TAG):].decode(errors="replace").startswith(fingerprint or "")
    try:
        key_fingerprint, _, _, key_dataset, _, _ = parse_feature_key(key)
    except ValueError:
        return fingerprint is None and dataset is None  # unreadable keys go only when everything goes
    return key_fingerprint.startswith(fingerprint or "") and dataset in (None, key_dataset)


# --- a cache's files, without LMDB -------------------------------------------------------------


def salvage_files(root: str | Path | None = None) -> dict:
    """Rebuild a cache whose file LMDB must not map: every intact entry that sound pages still reach is copied
    into a fresh file, which takes the damaged one's place. Returns {"kept", "dropped"}."""
    path = (cache_root(root) / "features.lmdb").absolute()
    emptied = (path / "data.mdb").is_file() and (path / "data.mdb").stat().st_size == 0
    try:
        entries = [] if emptied else list(lmdbcheck.salvage(path / "data.mdb"))
    except lmdbcheck.Damaged as error:  # no meta page to start from: nothing is reachable, and the file is kept
        raise CacheError(f"{path}: nothing in it can be salvaged ({error}); `promptgen cache clear --all` starts "
                         f"afresh") from None
    dims = {key[len(META_TAG):].decode(errors="replace"): embed_dim(value) for key, value in entries
            if key.startswith(META_TAG) and embed_dim(value) is not None}
    fresh_dir = path.with_name(path.name + ".rebuild")
    shutil.rmtree(fresh_dir, ignore_errors=True)
    fresh = lmdb.open(str(fresh_dir), subdir=True, map_size=DEFAULT_MAP_SIZE, readahead=False, max_dbs=0)
    kept = dropped = 0
    with fresh.begin(write=True) as txn:
        for key, value in entries:
            if key.startswith(META_TAG):
                if dims.get(key[len(META_TAG):].decode(errors="replace")) is not None:
                    txn.put(key, value)
            elif entry_problems(key, value, dims):
                dropped += 1
            else:
                txn.put(key, value)
                kept += 1
    fresh.close()
    with unopened(path):
        for name in ("data.mdb", "lock.mdb"):
            (path / name).unlink(missing_ok=True)
        os.replace(fresh_dir / "data.mdb", path / "data.mdb")
        shutil.rmtree(fresh_dir, ignore_errors=True)
    record_state(path)
    return {"kept": kept, "dropped": dropped}


def clear_files(root: str | Path | None = None) -> Path:
    """Delete a cache's files, whatever state they are in (what `cache clear --all` falls back to)."""
    path = (cache_root(root) / "features.lmdb").absolute()
    with unopened(path):
        for name in ("data.mdb", "lock.mdb"):
            try:
                (path / name).unlink(missing_ok=True)
            except OSError as error:
                raise CacheError(f"cannot delete {path / name}: {error.strerror or error}") from None
    return path
