"""Benchmark suites: TOML files in benchmarks/suites/, read into a checked :class:`Suite`.

A suite file has suite keys (what to sweep) and a run template (how each run is set up):

    description = "..."            # suite keys: description, kind, protocol, targets, methods, seeds, prepare,
                                   # perf, scale, stability, launcher, workers, hparams (a random search:
                                   # benchmarks.search)
    protocol = "multi-source"
    methods = ["all"]
    seeds = [0, 1, 2]
    dataset = "my-dataset"         # the run template: promptgen.runs.config.RunConfig's fields, read by the same
                                   # (or `datasets = ["a", "b"]`: the sweep once per dataset, a table each
                                   # and one averaged over datasets, as SPG's Table 1)
    preset = "cpu"                 # from_dict that reads a run directory's config.json
    [backbone]
    name = "my-backbone"
    [overrides.my-learner]         # component options on top of the preset, by component name
    epochs = 4

Every key is checked when the file is read, and a mistake names the file and the key
(``benchmarks/suites/pacs.toml: metods: unknown key``). Plugin names and options are checked
against the registry when the suite expands into jobs, before the first job runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import attrs

from benchmarks.search import Search
from benchmarks.search import parse as parse_search
from promptgen.runs.config import RunConfig, from_dict
from promptgen.errors import ConfigError, PromptgenError, suggestion

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SUITES_DIR = Path(__file__).parent / "suites"
PROTOCOLS = ("multi-source", "single-source", "cross-dataset")
KINDS = ("accuracy", "perf", "scale")
SUITE_KEYS = ("description", "kind", "protocol", "targets", "methods", "seeds", "prepare", "perf", "scale",
              "stability", "datasets", "launcher", "workers", "hparams")
# RunConfig fields a suite sets once for all its runs; the protocol, methods and seeds set the others.
TEMPLATE_KEYS = ("dataset", "target_dataset", "backbone", "preset", "views", "epoch", "overrides", "data_root",
                 "num_workers")


@attrs.frozen
class Suite:
    name: str
    path: Path
    description: str
    template: dict  # RunConfig fields shared by every run (TEMPLATE_KEYS)
    kind: str = "accuracy"
    protocol: str = "multi-source"
    targets: tuple[str, ...] | None = None  # None: every domain
    methods: tuple[str, ...] = ("all",)  # "all": every registered method that fits the backbone
    seeds: tuple[int, ...] = (0,)
    prepare: str | None = None  # how to get the data, shown when data_root is missing
    perf: dict = attrs.field(factory=dict)  # kind = "perf": the measurements' settings
    scale: dict = attrs.field(factory=dict)  # kind = "scale": the generated tree (benchmarks.scale)
    stability: bool = False  # the stability study of generated prompts (benchmarks.stability) after the sweep
    datasets: tuple[str, ...] | None = None  # several datasets: the template's dataset is the first
    launcher: str | None = None  # how the suite's jobs run when --launcher is not given (default: local)
    workers: int | None = None  # the processes launcher's workers when --workers is not given
    search: Search | None = None  # hparams: a random search over the declared options (benchmarks.search)
    only_dataset: str | None = None  # --dataset where it changes what the suite file runs: named in label, out

    @property
    def label(self) -> str:
        """The suite's name, and the dataset --dataset narrowed it to: 'default (digits-traps)'."""
        return f"{self.name} ({self.only_dataset})" if self.only_dataset else self.name

    @property
    def default_out(self) -> Path:
        """results/<suite>, or results/<suite>-<dataset> under --dataset: a narrowed run keeps off the full one's."""
        return Path("results") / (f"{self.name}-{self.only_dataset}" if self.only_dataset else self.name)

    def parts(self) -> list[Suite]:
        """One single-dataset suite per dataset (this suite alone where it names one dataset)."""
        if not self.datasets:
            return [self]
        return [attrs.evolve(self, datasets=None, template={**self.template, "dataset": name})
                for name in self.datasets]

    def run_config(self, **fields) -> RunConfig:
        """A RunConfig of this suite: the template with ``fields`` (targets, sources, method, seed, ...)."""
        return from_dict(RunConfig, {**self.template, **fields})

    @property
    def dataset(self) -> str:
        return self.example().dataset

    @property
    def target_dataset(self) -> str | None:
        return self.template.get("target_dataset")

    @property
    def data_root(self) -> str | None:
        return self.template.get("data_root")

    def example(self) -> RunConfig:
        """The template as a RunConfig (with a placeholder target): its defaults filled in."""
        return self.run_config(targets=("-",))


def suite_path(name: str) -> Path:
    """A suite's file: a name of a shipped suite, or a path to any .toml file."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"suite file {path} does not exist")
        return path
    path = SUITES_DIR / f"{name}.toml"
    if not path.is_file():
        raise ConfigError(f"unknown suite {name!r}; suites: {', '.join(available())} (or a path to a .toml file)"
                          f"{suggestion(name, available())}")
    return path


def listed_twice(values) -> object | None:
    """The first value that ``values`` holds twice (a target, method or seed that would run the same jobs
    twice), else None."""
    seen = set()
    for value in values:
        if value in seen:
            return value
        seen.add(value)
    return None


def available() -> list[str]:
    return sorted(path.stem for path in SUITES_DIR.glob("*.toml"))


def load(name: str) -> Suite:
    path = suite_path(name)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the suite file as UTF-8") from None
    return parse(values, path)


def parse(values: dict, path: Path) -> Suite:
    """Check every key of a suite file's table; errors name ``path`` and the key."""

    def fail(key: str, message: str):
        raise ConfigError(f"{path}: {key}: {message}")

    for key in values:
        if key not in SUITE_KEYS and key not in TEMPLATE_KEYS:
            fail(key, f"unknown key; suite keys: {', '.join(sorted(SUITE_KEYS + TEMPLATE_KEYS))}"
                      f"{suggestion(key, SUITE_KEYS + TEMPLATE_KEYS)}")
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
        twice = listed_twice(value)
        if twice is not None:  # the same jobs twice
            fail(key, f"{twice!r} is listed twice; list each once")
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
    if listed_twice(seeds) is not None:
        fail("seeds", f"{listed_twice(seeds)!r} is listed twice; list each once")
    perf, scale = values.get("perf", {}), values.get("scale", {})
    for key, table in (("perf", perf), ("scale", scale)):
        if not isinstance(table, dict):
            fail(key, "must be a table")
    stability = values.get("stability", False)
    if not isinstance(stability, bool):
        fail("stability", f"must be true or false, got {stability!r}")
    template = {key: values[key] for key in TEMPLATE_KEYS if key in values}
    datasets = names("datasets")
    if datasets is not None:
        if "dataset" in values:
            fail("datasets", "give either dataset (one) or datasets (several), not both")
        if kind != "accuracy" or protocol == "cross-dataset":
            fail("datasets", "several datasets go with kind = \"accuracy\" and a multi- or single-source protocol")
        template["dataset"] = datasets[0]
    workers = values.get("workers")
    if workers is not None and (type(workers) is not int or workers < 1):
        fail("workers", f"must be an integer >= 1, got {workers!r}")
    search = parse_search(values["hparams"], f"{path}: hparams") if "hparams" in values else None
    if search is not None and (kind != "accuracy" or datasets is not None):
        fail("hparams", "a search goes with kind = \"accuracy\" and one dataset (run each dataset's search on its own)")
    suite = Suite(name=path.stem, path=path, description=text("description", optional=False), template=template,
                  kind=kind, protocol=protocol, targets=names("targets"), methods=names("methods") or ("all",),
                  seeds=tuple(seeds), prepare=text("prepare"), perf=perf, scale=scale,
                  stability=stability, datasets=datasets, launcher=text("launcher"), workers=workers, search=search)
    check_template(suite)
    return suite


def check_template(suite: Suite) -> None:
    """The run template must build a RunConfig; its error is named by the file and the key at fault."""
    try:
        suite.example()
    except PromptgenError as error:
        message = str(error)
        for key in TEMPLATE_KEYS:
            if f"RunConfig.{key}" in message or "BackboneConfig" in message and key == "backbone":
                raise ConfigError(f"{suite.path}: {key}: {message}") from None
        raise ConfigError(f"{suite.path}: {message}") from None


def with_changes(suite: Suite, *, template: dict | None = None, **changes) -> Suite:
    """The suite with command-line overrides (None values leave a key as the file has it)."""
    changed = attrs.evolve(suite, **{key: value for key, value in changes.items() if value is not None})
    if template:
        changed = attrs.evolve(changed, template={**changed.template, **template})
        check_template(changed)
    return changed
