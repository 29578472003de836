"""Fast listing of image files: os.scandir only, no PIL (DomainNet has ~590k images)."""

from __future__ import annotations

import os
from pathlib import Path

from promptgen.toolkit import DatasetError

# What torchvision's ImageFolder accepts, minus formats no DG dataset uses.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
SPLIT_DIR = "spg_coop_splits"  # official split files live here, never a domain or class


def is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def subfolders(path: Path) -> list[str]:
    """Sorted names of the visible sub-directories of ``path`` (sorted like ImageFolder: case-sensitive)."""
    with os.scandir(path) as entries:
        return sorted(
            e.name for e in entries
            if e.is_dir() and not e.name.startswith(".") and e.name != SPLIT_DIR
        )


def images_under(folder: Path, prefix: str) -> list[str]:
    """Relative paths ('<prefix>/<sub>/.../<file>') of every image below ``folder``, sorted.

    Nested folders are followed, as ImageFolder does (symbolic links too); hidden files and folders
    are skipped. A folder reached twice through symbolic links (a loop) is a DatasetError naming it.
    """
    found = []
    stack = [(str(folder), prefix)]
    seen = {_identity(folder)}
    while stack:
        directory, relative = stack.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError as error:  # ELOOP: a link that points at itself
                    raise DatasetError(f"{entry.path}: {error.strerror or error} (a symbolic link loop?); remove the "
                                       f"link") from None
                if is_dir:
                    identity = _identity(entry.path)
                    if identity in seen:
                        raise DatasetError(f"{entry.path} leads back to a folder already listed (a symbolic link "
                                           f"loop); remove the link or point it elsewhere")
                    seen.add(identity)
                    stack.append((entry.path, f"{relative}/{entry.name}"))
                elif is_image(entry.name):
                    found.append(f"{relative}/{entry.name}")
    return sorted(found)


def _identity(path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def list_domain(domain_dir: Path) -> dict[str, list[str]]:
    """{class folder: sorted relative paths '<class>/<file>'} of one domain folder."""
    return {name: images_under(domain_dir / name, name) for name in subfolders(domain_dir)}
