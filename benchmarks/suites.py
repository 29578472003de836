"""Benchmark suites: TOML files in benchmarks/suites/, read into a checked :class:`Suite`.

A suite names a dataset, a DG protocol, methods, seeds, a backbone, a preset and overrides; or, with
``kind = "perf"``, the performance measurements. Every key is checked when the file is read, and a
mistake names the file and the key (``benchmarks/suites/pacs.toml: methods: unknown method 'spgg'``).
Names of plugins (datasets, generators) are checked against the registry only when the suite runs,
after its data root is found, so a suite for a dataset that is not installed still lists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

from promptgen.config import BackboneConfig
from promptgen.errors import ConfigError, PromptgenError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SUITES_DIR = Path(__file__).parent / "suites"
PROTOCOLS = ("multi-source", "single-source", "cross-dataset")
KINDS = ("accuracy", "perf")
BACKBONE_KEYS = ("name", "model", "pretrained", "device", "precision")
OVERRIDE_PARTS = ("coop", "generator")


@attrs.frozen
class Suite:
    name: str
    path: Path
    description: str
    kind: str = "accuracy"
    dataset: str = "digits-dg"
    protocol: str = "multi-source"
    target_dataset: str | None = None  # cross-dataset only
    targets: tuple[str, ...] | None = None  # None: every domain
    methods: tuple[str, ...] = ("all",)  # "all": zero-shot, coop and spg-<every registered generator>
    seeds: tuple[int, ...] = (0,)
    backbone: dict = attrs.field(factory=dict)
    preset: str = "auto"
    views: int | None = None
    overrides: dict = attrs.field(factory=dict)
    data_root: str | None = None  # real datasets: where they live (a path; '~' expanded)
    prepare: str | None = None  # how to get the data, shown when data_root is missing
    perf: dict = attrs.field(factory=dict)  # kind = "perf": the measurements' settings

    def backbone_config(self, device: str | None = None) -> BackboneConfig:
        values = {**self.backbone, **({"device": device} if device else {})}
        return BackboneConfig(**values)


def suite_path(name: str) -> Path:
    """A suite's file: a name of a shipped suite, or a path to any .toml file."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"suite file {path} does not exist")
        return path
    path = SUITES_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown suite {name!r}; suites: {', '.join(available())} (or a path to a .toml file)")
    return path


def available() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.toml"))


def load(name: str) -> Suite:
    path = suite_path(name)
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    return parse(values, path)


def parse(values: dict, path: Path) -> Suite:
    """Check every key of a suite file's table; errors name ``path`` and the key."""

    def fail(key: str, message: str):
        raise ConfigError(f"{path}: {key}: {message}")

    fields = {field.name for field in attrs.fields(Suite)} - {"name", "path"}
    for key in values:
        if key not in fields:
            fail(key, f"unknown key; suite keys: {', '.join(sorted(fields))}")
    if "description" not in values:
        fail("description", "missing (one line saying what the suite measures)")

    def text(key, optional=True):
        value = values.get(key)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def names(key):
        value = values.get(key)
        if value is None:
            return None
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            fail(key, f"must be a non-empty list of strings, got {value!r}")
        return tuple(value)

    kind = text("kind") or "accuracy"
    if kind not in KINDS:
        fail("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    protocol = text("protocol") or "multi-source"
    if protocol not in PROTOCOLS:
        fail("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    if (protocol == "cross-dataset") != ("target_dataset" in values):
        fail("target_dataset", "is required by, and only by, protocol = \"cross-dataset\"")
    seeds = values.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(type(s) is int and s >= 0 for s in seeds):
        fail("seeds", f"must be a non-empty list of integers >= 0, got {seeds!r}")
    views = values.get("views")
    if views is not None and (type(views) is not int or views < 1):
        fail("views", f"must be an integer >= 1, got {views!r}")
    backbone = values.get("backbone", {})
    if not isinstance(backbone, dict):
        fail("backbone", "must be a table with keys " + ", ".join(BACKBONE_KEYS))
    for key in backbone:
        if key not in BACKBONE_KEYS:
            fail(f"backbone.{key}", f"unknown key; backbone keys: {', '.join(BACKBONE_KEYS)}")
    overrides = values.get("overrides", {})
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        fail("overrides", "must be a table of tables ([overrides.coop], [overrides.generator])")
    for key in overrides:
        if key not in OVERRIDE_PARTS:
            fail(f"overrides.{key}", f"unknown part; parts: {', '.join(OVERRIDE_PARTS)}")
    perf = values.get("perf", {})
    if not isinstance(perf, dict):
        fail("perf", "must be a table")
    for key in ("preset",):
        if key in values and values[key] not in ("auto", "cpu", "gpu"):
            fail(key, f"must be auto, cpu or gpu, got {values[key]!r}")
    suite = Suite(
        name=path.stem, path=path, description=text("description", optional=False), kind=kind,
        dataset=text("dataset") or "digits-dg", protocol=protocol, target_dataset=text("target_dataset"),
        targets=names("targets"), methods=names("methods") or ("all",), seeds=tuple(seeds), backbone=backbone,
        preset=values.get("preset", "auto"), views=views, overrides=overrides,
        data_root=text("data_root"), prepare=text("prepare"), perf=perf,
    )
    try:
        suite.backbone_config()
    except PromptgenError as error:
        fail("backbone", str(error))
    return suite


def with_changes(suite: Suite, **changes) -> Suite:
    """The suite with command-line overrides (None values leave a key as the file has it)."""
    return attrs.evolve(suite, **{key: value for key, value in changes.items() if value is not None})
