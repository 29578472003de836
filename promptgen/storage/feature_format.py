"""The feature cache's bytes: key layout, entry encoding and the checks an entry must pass before it is used.

Keys are utf-8 bytes whose first field versions the layout:

    f2|<fingerprint>|<transform id>|<view>|<dataset name>|<sample version>|<sample key>   one feature
    m1|<fingerprint>                                                                     JSON {"embed_dim": E}

The sample key comes last, so it may itself contain "|"; the sample version is the image's content
identity (a changed image gets a new key). A feature entry's value is the label (int32), the
domain's byte length (uint16), a CRC-32 of everything after the header (uint32), the domain (utf-8)
and the L2-normalised feature (float16), little-endian. Every read checks the CRC, the width and
that the values are finite: a damaged entry is never used.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib

import numpy as np

from promptgen.components.protocols import Backbone

FEATURE_TAG = b"f2|"
META_TAG = b"m1|"
_HEAD = struct.Struct("<iHI")  # label, byte length of the domain name, CRC-32 of the rest
FLOAT16 = np.dtype("<f2")  # what a feature is stored as (and what a cache hit returns, widened)


def transform_id(backbone: Backbone, train: bool) -> str:
    """'train-' or 'eval-' + a short hash of that transform's repr (memory addresses removed).

    Both transforms are part of what a feature is: two backbones with the same weights but other
    preprocessing (image size, crop, normalisation) must not share entries.
    """
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(backbone.image_transform(train)))
    return ("train-" if train else "eval-") + hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def image_fingerprint(backbone: Backbone) -> str:
    """What keys a backbone's image features: its image tower's fingerprint where it has one (a retrained
    text tower then changes no image feature), else the fingerprint of all its weights."""
    return getattr(backbone, "image_fingerprint", None) or backbone.fingerprint


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
    body = domain.encode() + feature.astype(FLOAT16).tobytes()
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
    if start > size or (size - start) % FLOAT16.itemsize:
        raise ValueError(f"{size} bytes do not hold a {length}-byte domain and float16 values")
    if dim is not None and size - start != dim * FLOAT16.itemsize:
        raise ValueError(f"feature has {(size - start) // FLOAT16.itemsize} dims, expected {dim}")
    if zlib.crc32(memoryview(value)[_HEAD.size:], label & 0xFFFFFFFF) != crc:
        raise ValueError("checksum mismatch (the bytes were changed after they were written)")
    domain = bytes(value[_HEAD.size:start]).decode()
    return label, domain, np.frombuffer(value, FLOAT16, offset=start)


def embed_dim(meta) -> int | None:
    """The width a backbone's metadata entry (``m1|<fingerprint>``) states; None where it states none."""
    try:
        dim = json.loads(bytes(meta))["embed_dim"]
    except (ValueError, KeyError, TypeError):
        return None
    return dim if isinstance(dim, int) else None


def entry_problems(key: bytes, value, dims: dict[str, int]) -> list[str]:
    """Why the feature entry (key, value) must not be used, one line each (none: it is intact).

    dims: the width of each backbone fingerprint, from the metadata entries.
    """
    try:
        fingerprint = parse_feature_key(key)[0]
    except ValueError as error:
        return [f"{show_key(key)}: not a feature key ({error})"]
    if fingerprint not in dims:
        return [f"{show_key(key)}: no metadata (embed_dim) for backbone {fingerprint}"]
    try:
        feature = decode_entry(value, dims[fingerprint])[2]
    except ValueError as error:
        return [f"{show_key(key)}: does not decode ({error})"]
    if not np.isfinite(feature).all():
        return [f"{show_key(key)}: feature has non-finite values"]
    return []


def show_key(key: bytes) -> str:
    return repr(key.decode(errors="replace"))
