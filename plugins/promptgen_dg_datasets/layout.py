"""Where a dataset lives: its description (Spec) and the folders found for it under a data root (Layout)."""

from __future__ import annotations

from pathlib import Path

import attrs

from promptgen.toolkit import ConfigError, DatasetError


@attrs.frozen
class Spec:
    """What a DG dataset looks like on disk.

    domains: (domain name, folder names it may have on disk), in the dataset's domain order.
    class_folders: the class folder names (None: read from disk, for the generic folder dataset).
    excluded: '<domain>/<class>/<file>' of known broken images, never used.
    """

    name: str  # the registry name, used in messages and cache paths
    title: str  # the dataset's usual name, e.g. "PACS"
    dir_names: tuple[str, ...]  # the dataset's folder names under a parent data root
    domains: tuple[tuple[str, tuple[str, ...]], ...]
    class_folders: tuple[str, ...] | None
    lower_case: bool = False  # prompt names lower-cased (OfficeHome: "Alarm_Clock" -> "alarm clock")
    excluded: frozenset[str] = frozenset()

    def prompt_name(self, folder: str) -> str:
        name = " ".join(folder.replace("_", " ").split())
        return name.lower() if self.lower_case else name

    def layout_hint(self, where: str) -> str:
        folders = ", ".join(repr(folders[0]) for _, folders in self.domains)
        return (f"{where}/<domain>/<class>/<image> or {where}/images/<domain>/<class>/<image>, "
                f"with domain folders {folders}")


@attrs.frozen
class Layout:
    """The folders found: the dataset's own folder, the folder holding its domains, each domain's folder."""

    dataset_dir: Path
    base: Path  # dataset_dir, or dataset_dir/images (SPG/CoOp layout)
    domain_dirs: dict[str, Path]


def _domain_dirs(spec: Spec, base: Path) -> dict[str, Path]:
    found = {}
    for domain, folders in spec.domains:
        for folder in folders:
            if (base / folder).is_dir():
                found[domain] = base / folder
                break
    return found


def locate(spec: Spec, root) -> Layout:
    """Find the dataset under ``root``: the dataset's folder itself or its parent; a clear error otherwise."""
    if root is None:
        raise ConfigError(f"{spec.name}: no data root given; pass --data-root DIR: the {spec.title} folder "
                          f"(e.g. ~/data/{spec.dir_names[0] if spec.dir_names else spec.title}) or its parent")
    root = Path(root).expanduser().absolute()  # sample sources must not depend on the working directory
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DatasetError(f"{spec.name}: data root {root} {what}; expected the {spec.title} folder "
                           f"({spec.layout_hint(str(root))}) or its parent")
    best: tuple[Path, Path, dict[str, Path]] | None = None
    for candidate in [root, *(root / name for name in spec.dir_names)]:
        for base in (candidate, candidate / "images"):
            found = _domain_dirs(spec, base) if base.is_dir() else {}
            if found and (best is None or len(found) > len(best[2])):
                best = (candidate, base, found)
        if best is not None:
            break  # the root itself wins over a same-named child
    if best is None:
        children = " or ".join(f"{root}/{name}" for name in spec.dir_names)
        raise DatasetError(f"{spec.name}: no {spec.title} domain folders under {root}; expected "
                           f"{spec.layout_hint(str(root))}" + (f", or the same inside {children}" if children else ""))
    dataset_dir, base, found = best
    missing = [(domain, folders) for domain, folders in spec.domains if domain not in found]
    if missing:
        described = "; ".join(
            f"'{domain}' (expected {' or '.join(str(base / f) for f in folders)}, holding <class>/<image>)"
            for domain, folders in missing
        )
        raise DatasetError(f"{spec.name}: domain folder missing in {base}: {described}")
    return Layout(dataset_dir, base, found)
