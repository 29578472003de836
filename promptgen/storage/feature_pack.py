"""Feature-cache entries in one buffer, for machines that share no disk: an extraction shard's entries travel from
the node that computed them to the driver's cache, and a sweep's entries from the driver's cache to the nodes that
train on them (docs/distributed.md).

A pack is the entries ``<key length u32><value length u32><key><value>`` (little-endian) back to back, and the
backbones' metadata entries they need, in a uint8 array (Ray hands a task such an array out of its object store
without a copy). Its blake2b digest travels beside it and is checked before any entry is read; each entry is then
checked as a cache read checks it (checksum, width, finite values: feature_format.entry_problems) before it is
stored, and a bad one is left out and counted.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Iterable, Iterator

import attrs
import numpy as np

from promptgen.errors import CacheError
from promptgen.storage.feature_format import META_TAG, embed_dim, entry_problems, parse_feature_key
from promptgen.storage.cache_maintenance import put_all
from promptgen.storage.lmdb_env import begin_read

_SIZES = struct.Struct("<II")
BATCH = 4096  # entries per write transaction when a pack is stored


@attrs.frozen(eq=False)
class FeaturePack:
    data: np.ndarray  # uint8, the entries back to back
    digest: str  # blake2b of data, checked before it is read
    entries: int  # feature entries (metadata entries not counted)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)

    def __len__(self) -> int:
        return self.entries


def _digest(data) -> str:
    return hashlib.blake2b(memoryview(data), digest_size=16).hexdigest()


def pack(cache, keys: Iterable[bytes]) -> FeaturePack:
    """The entries of ``cache`` under ``keys`` (those it holds; a key it lacks is left out: :func:`missing` says
    which) and the metadata of their backbones."""
    parts, fingerprints, count = [], set(), 0
    with begin_read(cache.env) as txn:
        for key in dict.fromkeys(keys):
            value = txn.get(key)
            if value is None:
                continue
            parts += [_SIZES.pack(len(key), len(value)), key, bytes(value)]
            fingerprints.add(parse_feature_key(key)[0])
            count += 1
        for fingerprint in sorted(fingerprints):
            meta_key = META_TAG + fingerprint.encode()
            meta = txn.get(meta_key)
            if meta is not None:
                parts += [_SIZES.pack(len(meta_key), len(meta)), meta_key, bytes(meta)]
    data = np.frombuffer(b"".join(parts), np.uint8)
    return FeaturePack(data, _digest(data), count)


def missing(cache, keys: Iterable[bytes]) -> list[bytes]:
    """The ``keys`` that ``cache`` holds no entry for (an entry held is checked when it is read, as always)."""
    with begin_read(cache.env) as txn:
        return [key for key in dict.fromkeys(keys) if txn.get(key) is None]


def _entries(pack: FeaturePack) -> Iterator[tuple[bytes, memoryview]]:
    view, at = memoryview(pack.data), 0
    while at < len(view):
        if at + _SIZES.size > len(view):
            raise ValueError(f"cut off at byte {at}")
        key_size, value_size = _SIZES.unpack_from(view, at)
        at += _SIZES.size
        if at + key_size + value_size > len(view):
            raise ValueError(f"an entry at byte {at} runs past the end")
        yield bytes(view[at:at + key_size]), view[at + key_size:at + key_size + value_size]
        at += key_size + value_size


def store(pack: FeaturePack, cache, where: str = "a feature pack") -> dict:
    """Put the pack's intact entries that ``cache`` lacks into it: {"copied", "present", "damaged"} (feature
    entries). An entry the cache already holds is kept as it is: a feature computed on another machine may differ
    from it in a last float16 bit, and either is valid. ``where`` names the pack's origin in errors."""
    if cache.readonly:
        raise CacheError(f"feature cache {cache.path} is read-only: {where} cannot be stored in it")
    if _digest(pack.data) != pack.digest:
        raise CacheError(f"{where}: its digest does not match its bytes (damaged on the way); nothing was stored")
    try:
        entries = list(_entries(pack))
    except ValueError as error:
        raise CacheError(f"{where} is not a feature pack ({error}); nothing was stored") from None
    dims = {key[len(META_TAG):].decode(errors="replace"): embed_dim(value)
            for key, value in entries if key.startswith(META_TAG)}
    dims = {fingerprint: dim for fingerprint, dim in dims.items() if dim is not None}
    with begin_read(cache.env) as txn:
        fresh = [(key, value) for key, value in entries if txn.get(key) is None]
    features = sum(not key.startswith(META_TAG) for key, _ in entries)
    pending, damaged = [], 0
    for key, value in fresh:
        if key.startswith(META_TAG):
            if embed_dim(value) is not None:
                pending.append((key, bytes(value)))
        elif entry_problems(key, value, dims):
            damaged += 1
        else:
            pending.append((key, bytes(value)))
    copied = sum(put_all(cache, pending[start:start + BATCH]) for start in range(0, len(pending), BATCH))
    return {"copied": copied, "present": features - (copied + damaged), "damaged": damaged}
