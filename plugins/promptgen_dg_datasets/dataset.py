"""A DG dataset stored as <domain>/<class>/<image> folders: listed, checked and split on first use."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Annotated

import attrs
from PIL import Image

from promptgen.toolkit import ConfigError, DatasetError, option, Sample, suggestion
from promptgen_dg_datasets import imagecheck, splits
from promptgen_dg_datasets.layout import Layout, Spec, locate
from promptgen_dg_datasets.listing import IMAGE_EXTENSIONS, list_domain

log = logging.getLogger(__name__)

BAD_IMAGES = ("fail", "skip")


@attrs.frozen(kw_only=True)
class FolderTreeOptions:
    """The options every DG dataset of this plugin shares (FolderTreeDataset's docstring says what each does)."""

    seed: Annotated[int, option("seed of a drawn split (no official split file); the data's own, the same for "
                                "every run seed")] = 0
    split: Annotated[str, option("'files': the official split files, else a seeded split by val_fraction; "
                                 "'official': what the released SPG code runs", choices=splits.MODES)] = "files"
    val_fraction: Annotated[float, option("share of each class drawn to val when split 'files' has no split file "
                                          "(DomainBed's holdout: 0.2)", above=0, below=1)] = \
        attrs.field(default=0.2, converter=float)
    bad_images: Annotated[str, option("'fail': one error listing every unreadable image; 'skip': leave them out, "
                                      "listed as problems", choices=BAD_IMAGES)] = "fail"
    check_images: Annotated[bool, option("scan every image once for readability (False: no scan)")] = \
        attrs.field(default=True, converter=bool)
    content_hash: Annotated[bool, option("identify images by a hash of their bytes, not their size and "
                                         "modification time")] = attrs.field(default=False, converter=bool)
    progress: bool = attrs.field(default=True, converter=bool)
    cache_dir: str | None = None  # where seeded splits and image-scan results go (default: the cache root)


OPTIONS = tuple(field.name for field in attrs.fields(FolderTreeOptions))  # as the unknown-option message lists them


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    """One log line per distinct message per process: a dataset built twice (a sweep plans, then runs) says it once."""
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


@attrs.frozen
class Prepared:
    """A dataset after its first use: samples per domain and split, where each split came from, problems."""

    samples: dict[str, dict[str, list[Sample]]]
    split_source: dict[str, str]
    problems: tuple[str, ...]


class FolderTreeDataset:
    """Base of the DG dataset plugins: a ``Spec`` says which folders to read; see docs/datasets.md.

    Options: seed (of the split when there is no official split file), split (below), val_fraction
    (0.2, DomainBed's holdout; split "files" only), bad_images ('fail': one error listing every
    unreadable image; 'skip': leave them out and list them as problems), check_images (False: no
    scan), content_hash (identify each image by a hash of its bytes instead of its size and
    modification time: the cached features of a file survive a touch, at the cost of reading every
    file once), progress (bars).

    split: "files" (default, cpu preset): train/val from the official split file under
    spg_coop_splits/ when there is one, else a seeded split stratified by val_fraction; test is the
    whole domain. "official" (gpu preset): what the released SPG code runs. It reads the same split
    files when present (spg_*.py do; the released ones are SPG's exact split), else draws its
    split_data procedure with ``seed``: per class round(0.7 n) train and the rest val, DomainNet
    ceil(0.02 n) train and the next ceil(0.01 n) val (``official_counts``; splits.py cites the lines).
    The shuffle is promptgen's seeded one over the sorted listing: SPG's Python ``random`` on an
    os.listdir order cannot be reproduced. Test is the domain's train + val (spg_*.py ``_read_data``):
    the whole domain, except for DomainNet (about 3 % of it). A drawn split is written to the cache
    (splits.seeded_path) and reused; ``info()`` reports the mode and each domain's split source.
    Labels index ``classes``, which follows the sorted class folder names, as ImageFolder does.
    """

    domains: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    spec: Spec | None = None  # set by each dataset class (the folder dataset builds its own)
    # A class folder that exists but holds no image: a (class, domain) pair with no images, warned about (the
    # standard datasets' class lists are fixed), or an error where the folders themselves are the class list.
    empty_class_folder_is_an_error = False
    # (n_train, n_val) of a class of n images under split="official": SPG's split_data for this dataset
    official_counts = staticmethod(splits.spg_70_30)
    presets = {"gpu": {"split": "official"}, "cpu": {"split": "files"}}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A dataset whose classes are fixed is known by them before any data is read (e.g. the perf
        # suite's realistic class names, the scale suite's folders); instances set the same tuples again.
        if cls.spec is not None and cls.spec.class_folders is not None:
            cls.domains = tuple(domain for domain, _ in cls.spec.domains)
            cls.class_folders = tuple(sorted(cls.spec.class_folders))
            cls.classes = tuple(cls.spec.prompt_name(folder) for folder in cls.class_folders)

    Options = FolderTreeOptions

    def __init__(self, root=None, options: FolderTreeOptions = FolderTreeOptions(), **unknown):
        name = self.spec.name if self.spec else "folder"
        if unknown:
            raise ConfigError(f"{name}: unknown option(s) {', '.join(sorted(unknown))}; options: {', '.join(OPTIONS)}"
                              f"{suggestion(sorted(unknown)[0], OPTIONS)}")
        self.options = options
        self.spec = self.make_spec(root)
        self.layout: Layout = locate(self.spec, root)
        self.class_folders = tuple(sorted(self.spec.class_folders))
        self.domains = tuple(domain for domain, _ in self.spec.domains)
        self.classes = tuple(self.spec.prompt_name(folder) for folder in self.class_folders)
        self._check_prompt_names()
        self._label = {folder: i for i, folder in enumerate(self.class_folders)}
        self._class_of = {splits.normal(n): f for f, c in zip(self.class_folders, self.classes) for n in (f, c)}
        self._state: Prepared | None = None

    def make_spec(self, root) -> Spec:
        return self.spec

    def key_prefix(self) -> str:
        return ""

    # --- the Dataset protocol -----------------------------------------------------------------

    def samples(self, domain: str, split: str) -> list[Sample]:
        if domain not in self.domains:
            raise ConfigError(f"{self.spec.name}: unknown domain {domain!r}; domains: {', '.join(self.domains)}"
                              f"{suggestion(domain, self.domains)}")
        if split not in splits.SPLITS:
            raise ConfigError(f"{self.spec.name}: unknown split {split!r}; splits: {', '.join(splits.SPLITS)}")
        return list(self.prepared().samples[domain][split])

    def load_image(self, sample: Sample) -> Image.Image:
        try:
            with Image.open(sample.source) as image:
                return image.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:
            raise DatasetError(f"{self.spec.name}: cannot load image {sample.source}: {error}") from None

    # --- what `promptgen data info` shows -----------------------------------------------------

    def info(self) -> dict:
        state = self.prepared()
        return {
            "dataset": self.spec.name,
            "root": str(self.layout.dataset_dir),
            "domains": list(self.domains),
            "classes": list(self.classes),
            "split": self.options.split,
            "splits": {d: {s: len(state.samples[d][s]) for s in splits.SPLITS} for d in self.domains},
            "split_source": dict(state.split_source),
            "problems": list(state.problems),
        }

    @property
    def problems(self) -> tuple[str, ...]:
        return self.prepared().problems

    # --- first use: list, check, split --------------------------------------------------------

    def prepared(self) -> Prepared:
        if self._state is None:
            self._state = self._prepare()
        return self._state

    def _prepare(self) -> Prepared:
        problems: list[str] = []
        writes: list[tuple[Path, dict]] = []  # written only once everything is known to be good
        files, ignored = self._list(problems)
        if self.options.check_images:
            self._drop_bad_images(files, ignored, problems, writes)
        resolver = splits.Resolver(
            base=self.layout.base,
            domain_of_folder={path.name: domain for domain, path in self.layout.domain_dirs.items()},
            images={d: frozenset(relative for _, relative in files[d]) for d in self.domains},
            ignored={d: frozenset(ignored[d]) for d in self.domains},
        )
        samples, sources = {}, {}
        for index, domain in enumerate(self.domains):
            train, val, sources[domain] = self._split(domain, index, files[domain], resolver, problems, writes)
            every = self._samples(domain, files[domain])
            by_image = dict(zip(files[domain], every))  # one Sample per image, shared by test and train/val
            test = every
            # spg_*.py's _read_data tests train + val (DomainNet: ~3 % of the domain)
            if self.options.split == "official":
                tested = set(train) | set(val)
                test = [sample for image, sample in zip(files[domain], every) if image in tested]
            samples[domain] = {"train": [by_image[i] for i in train], "val": [by_image[i] for i in val], "test": test}
        for path, document in writes:
            splits.write_json(path, document)
        return Prepared(samples, sources, tuple(problems))

    def _samples(self, domain: str, images) -> list[Sample]:
        # Plain string joins, not Path: DomainNet makes ~590k of these.
        key, source, label = f"{self.key_prefix()}{domain}/", self._prefix(domain), self._label
        return [Sample(key=key + relative, label=label[folder], domain=domain, source=source + relative,
                       version=self._version(source + relative))
                for folder, relative in images]

    def _version(self, path: str) -> str:
        """The file's content identity: size and modification time, or a hash of its bytes (content_hash)."""
        try:
            if self.options.content_hash:
                digest = hashlib.blake2b(digest_size=12)
                with open(path, "rb") as file:
                    for block in iter(lambda: file.read(1 << 20), b""):
                        digest.update(block)
                return "b2-" + digest.hexdigest()
            stat = os.stat(path)
        except OSError as error:
            raise DatasetError(f"{self.spec.name}: cannot read {path}: {error.strerror or error}") from None
        return f"{stat.st_size}-{stat.st_mtime_ns}"

    def _prefix(self, domain: str) -> str:
        return str(self.layout.domain_dirs[domain]) + os.sep

    def _list(self, problems: list[str]):
        """{domain: sorted (class folder, relative path)}, {domain: excluded relative paths}."""
        files, ignored, counts = {}, {}, {}
        known = set(self.class_folders)
        for domain in self.domains:
            folder = self.layout.domain_dirs[domain]
            by_class = list_domain(folder)
            for name in sorted(set(by_class) - known):
                problems.append(f"{folder / name}: not a {self.spec.title} class folder; its {len(by_class[name])} "
                                f"images are not used")
            ignored[domain] = {r for c in self.class_folders for r in by_class.get(c, ())
                               if f"{domain}/{r}" in self.spec.excluded}
            files[domain] = tuple((c, r) for c in self.class_folders for r in by_class.get(c, ())
                                  if r not in ignored[domain])
            empty = [name for name in self.class_folders if name in by_class and not by_class[name]]
            if empty and self.empty_class_folder_is_an_error:
                raise DatasetError(
                    f"{self.spec.name}: class folder {folder / empty[0]} holds no images "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))})" + (f", nor do {len(empty) - 1} more in {folder}"
                                                                  if len(empty) > 1 else "")
                    + "; it would be a class with no images in this domain: put its images there, or remove the "
                      "folder")
            counts[domain] = {c: len(by_class.get(c, ())) for c in self.class_folders}
            if not files[domain]:
                raise DatasetError(
                    f"{self.spec.name}: domain '{domain}' has no images: {folder} holds no <class>/<image> files "
                    f"({', '.join(sorted(IMAGE_EXTENSIONS))}) of the classes {', '.join(self.class_folders[:10])}"
                    + (", ..." if len(self.class_folders) > 10 else ""))
        missing = []
        for folder in self.class_folders:
            for domain in self.domains:
                if counts[domain][folder] == 0:
                    per_domain = ", ".join(f"{d} {counts[d][folder]}" for d in self.domains)
                    missing.append(f"class '{folder}' has no images in domain '{domain}' "
                                   f"({self.layout.domain_dirs[domain] / folder}); images per domain: {per_domain}")
        problems.extend(missing)
        if missing:
            _warn_once(f"{self.spec.name} at {self.layout.base}: {len(missing)} (class, domain) pair(s) have no images "
                       f"(first: {missing[0]}); `promptgen data info` lists them all")
        return files, ignored

    def _drop_bad_images(self, files, ignored, problems, writes) -> None:
        paths = [self._prefix(d) + relative for d in self.domains for _, relative in files[d]]
        bad, result_path, cached = imagecheck.find_bad_images(self.spec.name, paths, progress=self.options.progress,
                                                              cache_dir=self.options.cache_dir)
        if bad and self.options.bad_images == "fail":
            raise DatasetError(
                f"{self.spec.name}: {len(bad)} unreadable or truncated image(s) under {self.layout.base}; replace or "
                f"remove them, or leave them out with bad_images='skip' (promptgen data info --bad-images skip):\n  "
                + "\n  ".join(f"{path}: {reason}" for path, reason in bad))
        if not cached:
            writes.append((result_path, imagecheck.document(self.spec.name, paths, bad)))
        bad_paths = {path for path, _ in bad}
        problems += [f"unreadable image left out: {path} ({reason})" for path, reason in bad]
        for domain in self.domains:
            folder, prefix = self.layout.domain_dirs[domain], self._prefix(domain)
            dropped = {r for _, r in files[domain] if prefix + r in bad_paths}
            if dropped:
                ignored[domain] |= dropped
                files[domain] = tuple(image for image in files[domain] if image[1] not in dropped)
                if not files[domain]:
                    raise DatasetError(f"{self.spec.name}: domain '{domain}' has no readable images in {folder}")

    def _split(self, domain, index, files, resolver, problems, writes):
        """(train, val, source) of one domain: the official split file if there is one, else the mode's own split
        (files: seeded, stratified by val_fraction; official: SPG's split_data with ``seed``), written once."""
        folder = self.layout.domain_dirs[domain]
        initials = [d[0].lower() for d in self.domains]
        names = [domain, folder.name, "_".join(domain.split()).lower()]
        if initials.count(domain[0].lower()) == 1:
            names.append(domain[0].lower())  # SPG names PACS's files a_, c_, p_, s_
        context = splits.DomainContext(domain, folder, files, self._class_of, frozenset(c for c, _ in files))
        whole = self.options.split == "files"  # is every image of the domain tested? (see _prepare)
        official = splits.official_file(self.layout.dataset_dir, names, self.options.seed)
        if official is not None:
            train, val, more = splits.check_split(official, splits.read_document(official), context, resolver, whole)
            problems += more
            return train, val, f"official: {official}"
        meta = {"dataset": self.spec.name, "domain": domain, "seed": self.options.seed, "split": self.options.split,
                "paths_relative_to": "the folder holding the domain folders"}
        if self.options.split == "files":
            label, source = f"seed{self.options.seed}_val{self.options.val_fraction:g}", "seeded"
            meta.update(val_fraction=self.options.val_fraction, stratified=True)
            draw = functools.partial(splits.seeded_split, val_fraction=self.options.val_fraction)
        else:
            label, source = f"official_seed{self.options.seed}", "official procedure, seeded"
            meta.update(counts=self.official_counts.__name__, test="train + val")
            draw = functools.partial(splits.official_split, counts=self.official_counts)
        path = splits.seeded_path(self.spec.name, domain, files, label, self.options.cache_dir)
        if path.is_file():
            train, val, more = splits.check_split(path, splits.read_document(path), context, resolver, whole)
            problems += more
        else:
            train, val = draw(self.spec.name, domain, files, self.options.seed)
            writes.append((path, splits.seeded_document(train, val, folder_name=folder.name, label_of=self._label,
                                                        domain_index=index, meta=meta)))
        return train, val, f"{source}: {path}"

    def _check_prompt_names(self) -> None:
        seen: dict[str, str] = {}
        for folder in self.class_folders:
            other = seen.setdefault(splits.normal(folder), folder)
            if other != folder:
                raise DatasetError(f"{self.spec.name}: class folders '{other}' and '{folder}' give the same class "
                                   f"name in prompts; rename one of them")
