"""Train/val/test splits of one domain, in one of two modes (the dataset option ``split``).

"files" (the default and the cpu preset): an official SPG split file when there is one, else a
seeded split stratified by class (``val_fraction`` of each class to val); test is the whole domain
(leave-one-domain-out, every target image tested).
"official" (the gpu preset): what the released SPG code runs. Its split file when there is one;
else its ``split_data`` procedure (``spg_70_30``, ``spg_domainnet``) on promptgen's seeded shuffle;
test is the domain's train + val, as spg_*.py's ``_read_data`` builds it: the whole domain, except
for DomainNet, whose 2 % + 1 % per class leave about 3 % of the target to test.

Split files use SPG/CoOp's schema, one JSON file per domain:
    {"train": [[relative image path, label, domain index, class name], ...], "val": [...]}
Official files sit in <dataset dir>/spg_coop_splits/[<seed>/]<domain>_train_val_split.json. A split
promptgen draws is written under cache_root()/splits/<dataset>/, named by mode, seed, fraction and a
hash of the domain's file list, so it is reused while the files stay the same and can be copied to
another machine. Test is never in a file: it follows from the mode (above).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import attrs
import numpy as np

from promptgen.toolkit import atomic_file, cache_root, class_key, DatasetError, stable_int_hash, writable_dir
from promptgen_dg_datasets.listing import SPLIT_DIR

SPLITS = ("train", "val", "test")
MODES = ("files", "official")  # the dataset option ``split``
ENTRY_SHAPE = "[relative image path, label, domain index, class name]"
MAX_LISTED = 20  # problems listed in one error; the count says how many more there are

Image = tuple[str, str]  # (class folder, path relative to the domain folder: '<class>/<file>')


# Class names compare exactly as a cross-dataset run compares them: one implementation, the engine's.
normal = class_key


def official_file(dataset_dir: Path, names: list[str], seed: int) -> Path | None:
    """The first <name>_train_val_split.json in spg_coop_splits/<seed>/ or spg_coop_splits/."""
    directory = dataset_dir / SPLIT_DIR
    for folder in (directory / str(seed), directory):
        for name in dict.fromkeys(names):
            path = folder / f"{name}_train_val_split.json"
            if path.is_file():
                return path
    return None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_document(path: Path) -> dict:
    """The split file's JSON, its schema checked: the first misshapen entry is named in the error."""
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise DatasetError(f"split file {path}: cannot read it ({error.strerror or error})") from None
    except ValueError as error:
        raise DatasetError(f"split file {path}: not valid JSON ({error})") from None
    if not isinstance(document, dict) or not all(isinstance(document.get(k), list) for k in ("train", "val")):
        got = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise DatasetError(f"split file {path}: expected a JSON object with lists 'train' and 'val' of "
                           f"{ENTRY_SHAPE}, got {got}")
    for split in ("train", "val"):
        for i, entry in enumerate(document[split]):
            if not (isinstance(entry, list) and len(entry) == 4 and isinstance(entry[0], str) and _is_int(entry[1])
                    and _is_int(entry[2]) and isinstance(entry[3], str)):
                raise DatasetError(f"split file {path}: {split}[{i}] should be {ENTRY_SHAPE}, "
                                   f"got {json.dumps(entry)[:200]}")
    return document


@attrs.frozen
class Resolver:
    """Finds the listed image a split file's path names, whatever prefix it carries.

    SPG's files name images from the parent of the dataset folder ('PACS/images/art_painting/dog/x.jpg'),
    DomainBed-style ones from the dataset folder ('art_painting/dog/x.jpg'): an image is found by the
    first '<domain folder>/<class>/<file>' in its path that is an image of that domain.
    """

    base: Path  # the folder holding the domain folders (for messages)
    domain_of_folder: dict[str, str]
    images: dict[str, frozenset[str]]  # domain -> relative paths of usable images
    ignored: dict[str, frozenset[str]]  # domain -> relative paths never used (known broken, skipped)

    def find(self, path: str) -> tuple[str, str, bool] | None:
        """(domain, '<class>/<file>', ignored) of the image ``path`` names; None when there is none."""
        parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
        for i, part in enumerate(parts[:-2]):
            domain = self.domain_of_folder.get(part)
            if domain is None:
                continue
            rest = "/".join(parts[i + 1:])
            if rest in self.images[domain]:
                return domain, rest, False
            if rest in self.ignored[domain]:
                return domain, rest, True
        return None


@attrs.frozen
class DomainContext:
    """What checking one domain's split file needs to know about the dataset."""

    domain: str
    folder: Path
    files: tuple[Image, ...]
    class_of: dict[str, str]  # normal(class name or folder) -> class folder
    present: frozenset[str]  # class folders with images in this domain


def check_split(path: Path, document: dict, context: DomainContext, resolver: Resolver,
                tested_whole: bool = True):
    """(train, val, problems): the images of a schema-checked split file, after checking every entry.

    Each entry's image must exist in this domain, its class name must be a class of the dataset and
    match the image's class folder, labels and class names must correspond one to one, and no image
    may appear twice. Every failing entry is listed (up to MAX_LISTED) in one error. Images in neither
    list are a problem only when the whole domain is tested (``tested_whole``); else they are left out by design.
    """
    errors, seen, chosen = [], {}, {"train": [], "val": []}
    label_class, class_label = {}, {}
    for split in ("train", "val"):
        for i, (image, label, _, name) in enumerate(document[split]):
            where = f"{split}[{i}] '{image}'"
            folder = context.class_of.get(normal(name))
            if folder is None:
                errors.append(f"{where}: unknown class name '{name}'")
                continue
            if label_class.setdefault(label, folder) != folder:
                errors.append(f"{where}: label {label} is used for class '{label_class[label]}' and for '{name}'")
            if class_label.setdefault(folder, label) != label:
                errors.append(f"{where}: class '{name}' has label {class_label[folder]} elsewhere and {label} here")
            found = resolver.find(image)
            if found is None:
                if folder not in context.present:
                    errors.append(f"{where}: class '{name}' has no images in domain '{context.domain}' "
                                  f"(no folder {context.folder / folder} with images)")
                else:
                    errors.append(f"{where}: no such image of domain '{context.domain}' under {resolver.base}")
                continue
            domain, relative, ignored = found
            if domain != context.domain:
                errors.append(f"{where}: an image of domain '{domain}', not '{context.domain}'")
            elif relative.split("/")[0] != folder:
                errors.append(f"{where}: labelled '{name}' but lies in class folder '{relative.split('/')[0]}'")
            elif relative in seen:
                errors.append(f"{where}: the same image is already in {seen[relative]}")
            else:
                seen[relative] = f"{split}[{i}]"
                if not ignored:
                    chosen[split].append((folder, relative))
    if errors:
        more = f"\n  ... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise DatasetError(f"split file {path}: {len(errors)} bad entr{'y' if len(errors) == 1 else 'ies'}:\n  "
                           + "\n  ".join(errors[:MAX_LISTED]) + more)
    uncovered = sum(1 for _, relative in context.files if relative not in seen) if tested_whole else 0
    problems = [f"{uncovered} images of domain '{context.domain}' are in neither train nor val of {path} "
                f"(they are in test)"] if uncovered else []
    return sorted(chosen["train"]), sorted(chosen["val"]), problems


def _shuffled_classes(dataset: str, domain: str, files: tuple[Image, ...], seed: int):
    """(class folder, its images in a seeded random order) per class: the order depends on the dataset, domain,
    seed and class only, not on the file system's listing order."""
    by_class: dict[str, list[Image]] = {}
    for image in files:
        by_class.setdefault(image[0], []).append(image)
    for folder, images in sorted(by_class.items()):
        order = np.random.default_rng(stable_int_hash(dataset, domain, seed, folder)).permutation(len(images))
        yield folder, [images[i] for i in order]


def seeded_split(dataset: str, domain: str, files: tuple[Image, ...], seed: int,
                 val_fraction: float) -> tuple[list[Image], list[Image]]:
    """Stratified: each class's images are shuffled (seeded by dataset, domain, seed and class) and
    round(val_fraction * n) of them go to val, keeping at least one in train."""
    train, val = [], []
    for _, images in _shuffled_classes(dataset, domain, files, seed):
        n_val = min(round(val_fraction * len(images)), len(images) - 1)
        val += images[:n_val]
        train += images[n_val:]
    return sorted(train), sorted(val)


def spg_70_30(n: int) -> tuple[int, int]:
    """(train, val) of a class of n images in SPG's split_data: ``n_train = round(n_total * p_trn)`` with
    p_trn = 0.7, the rest val (datasets/pacs_coop.py:21,28-29,42-43; terra_incognita_coop.py:20,27-28,41-42 the
    same; office_home_coop.py:21,25-30 per class of each of Dassl's train/ and val/ folders, which the DomainBed
    layout has not). Python's round of the float product, half to even: 15 * 0.7 = 10.5 -> 10, 25 * 0.7 -> 18."""
    n_train = round(n * 0.7)
    return n_train, n - n_train


def spg_domainnet(n: int) -> tuple[int, int]:
    """(train, val) of a class of n images in SPG's DomainNet split_data: ``math.ceil(n_total * 0.02)`` train,
    the next ``math.ceil(n_total * 0.01)`` val, the rest unused (datasets/domainnet_coop.py:21-22,29-31,44-45);
    its slices cap both at what is left (a one-image class: 1 train, 0 val)."""
    n_train = math.ceil(n * 0.02)  # never above n
    return n_train, min(math.ceil(n * 0.01), n - n_train)


def official_split(dataset: str, domain: str, files: tuple[Image, ...], seed: int,
                   counts) -> tuple[list[Image], list[Image]]:
    """SPG's split_data per class: shuffle, the first n_train to train, the next n_val to val
    (``counts(n) -> (n_train, n_val)``). The shuffle is promptgen's seeded one (as seeded_split's): SPG's
    ``random.shuffle`` of an os.listdir order depends on the file system, so no seed reproduces its draw."""
    train, val = [], []
    for _, images in _shuffled_classes(dataset, domain, files, seed):
        n_train, n_val = counts(len(images))
        train += images[:n_train]
        val += images[n_train:n_train + n_val]
    return sorted(train), sorted(val)


def seeded_path(dataset: str, domain: str, files: tuple[Image, ...], label: str, cache_dir=None) -> Path:
    """Where promptgen's own split of a domain goes; ``label`` names the mode and its settings (seed, fraction)."""
    digest = hashlib.blake2b("\n".join(relative for _, relative in files).encode(), digest_size=6).hexdigest()
    slug = "_".join(domain.split())
    return cache_root(cache_dir) / "splits" / dataset / f"{slug}_{label}_{digest}_train_val_split.json"


def seeded_document(train, val, *, folder_name: str, label_of: dict[str, int], domain_index: int, meta: dict) -> dict:
    """The split in SPG's schema; image paths are relative to the folder holding the domain folders."""
    def entries(images):
        return [[f"{folder_name}/{relative}", label_of[folder], domain_index, folder] for folder, relative in images]

    return {"train": entries(train), "val": entries(val), "meta": meta}


def write_json(path: Path, document: dict) -> None:
    """Write then rename: a killed run never leaves a half file that looks complete."""
    writable_dir(path.parent, "promptgen dataset cache")
    with atomic_file(path) as file:
        json.dump(document, file, indent=1)
