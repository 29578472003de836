"""Find unreadable or truncated images once per version of a dataset: PIL open + verify, cached.

The result (the list of bad files) is cached under cache_root()/image-checks, keyed by a hash of
every file's path, size and mtime: a 590k-image DomainNet is scanned once, and again only when a
file changes.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import multiprocessing
import os
from pathlib import Path
from typing import Iterator, Sequence

from PIL import Image
from tqdm.auto import tqdm

from promptgen.toolkit import cache_root

FORMAT_VERSION = 1  # bump when the check changes: old results are then ignored
JPEG_END = b"\xff\xd9"
PARALLEL_FROM = 5000  # images; below that, starting worker processes costs more than it saves


def check_image(path: str) -> str | None:
    """Why ``path`` is not a usable image, or None when it is."""
    try:
        with Image.open(path) as image:
            image.verify()  # structure and checksums (PNG CRCs); does not decode pixels
            is_jpeg = image.format == "JPEG"
        # verify() cannot see a JPEG cut short. One that does not end with its end-of-image marker
        # is decoded in full to tell a truncated file from one with harmless trailing bytes.
        if is_jpeg and not _ends_with_jpeg_marker(path):
            with Image.open(path) as image:
                image.load()
    except Exception as error:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(error).__name__}: {error}"
    return None


def _ends_with_jpeg_marker(path: str) -> bool:
    with open(path, "rb") as file:
        file.seek(0, os.SEEK_END)
        file.seek(max(0, file.tell() - 64))
        return file.read().rstrip(b"\x00\r\n ").endswith(JPEG_END)


def fingerprint(paths: Sequence[str]) -> str:
    """A hash of every file's path, size and modification time."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"v{FORMAT_VERSION}".encode())
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


def result_path(dataset: str, paths: Sequence[str], cache_dir=None) -> Path:
    return cache_root(cache_dir) / "image-checks" / f"{dataset}-{fingerprint(paths)}.json"


def find_bad_images(dataset: str, paths: Sequence[str], *, progress: bool = True,
                    cache_dir=None) -> tuple[list[list[str]], Path, bool]:
    """([path, reason] of each bad image, where the result is cached, whether it came from the cache).

    The caller writes the result (``save``) once the dataset is known to be usable, so that a
    failing dataset leaves nothing behind.
    """
    path = result_path(dataset, paths, cache_dir)
    if path.is_file():
        try:
            return json.loads(path.read_text())["bad"], path, True
        except (OSError, ValueError, KeyError):
            pass  # an unreadable cache entry: check again and overwrite it
    workers = min(os.cpu_count() or 1, 8) if len(paths) >= PARALLEL_FROM else 1
    reasons = _reasons(paths, workers)
    bad = [[image, reason] for image, reason in
           zip(paths, tqdm(reasons, total=len(paths), desc=f"checking {dataset} images (once, {workers} "
                           f"process{'es' if workers > 1 else ''})", unit="img", disable=not progress,
                           mininterval=1.0)) if reason]
    return bad, path, False


def _reasons(paths: Sequence[str], workers: int) -> Iterator[str | None]:
    """check_image of every path, in order: in ``workers`` processes for a large dataset (the check is
    CPU-bound Python, so threads would share one core)."""
    if workers <= 1:
        yield from map(check_image, paths)
        return
    context = multiprocessing.get_context("spawn")  # safe beside torch's threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(check_image, paths, chunksize=256)


def document(dataset: str, paths: Sequence[str], bad: list[list[str]]) -> dict:
    return {"dataset": dataset, "format": FORMAT_VERSION, "images": len(paths), "bad": bad}
