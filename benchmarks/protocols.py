"""The three DG protocols, each expanding a suite into independent jobs.

  multi-source   leave one domain out: for each target, train on every other domain
  single-source  for each source, train on it alone and test on every other domain
  cross-dataset  train on every domain of one dataset, test on each domain of another (shared classes)

Zero-shot learns nothing and has no randomness, so it runs with the first seed only.
"""

from __future__ import annotations

from typing import Sequence

from benchmarks.records import Job
from benchmarks.suites import Suite
from promptgen.errors import ConfigError
from promptgen.registry import get_registry

BASE_METHODS = ("zero-shot", "coop")


def all_methods() -> tuple[str, ...]:
    """zero-shot, coop and SPG with every registered generator (spg-cgan first: it is the paper's)."""
    generators = sorted(get_registry().names("generator"), key=lambda name: (name != "cgan", name))
    return (*BASE_METHODS, *(f"spg-{name}" for name in generators))


def resolve_methods(methods: Sequence[str], where: str) -> tuple[str, ...]:
    """Expand "all" and "spg" (= spg-cgan); name ``where`` (file: key) for an unknown method."""
    known = all_methods()
    resolved = []
    for method in methods:
        expanded = known if method == "all" else ("spg-cgan",) if method == "spg" else (method,)
        for name in expanded:
            if name not in known:
                raise ConfigError(f"{where}: unknown method {name!r}; methods: all, spg, {', '.join(known)}")
            if name not in resolved:
                resolved.append(name)
    return tuple(resolved)


def leave_one_out(domains: Sequence[str], targets: Sequence[str] | None = None) -> list[tuple[tuple, tuple]]:
    """(sources, (target,)) for each target: every other domain is a source."""
    return [(tuple(d for d in domains if d != target), (target,)) for target in (targets or domains)]


def single_source(domains: Sequence[str], targets: Sequence[str] | None = None) -> list[tuple[tuple, tuple]]:
    """((source,), targets) for each source: every other domain (of ``targets``, if given) is a target."""
    pairs = []
    for source in domains:
        tested = tuple(d for d in (targets or domains) if d != source)
        if tested:
            pairs.append(((source,), tested))
    return pairs


def expand(suite: Suite, methods: Sequence[str] | None = None) -> list[Job]:
    """Every (sources, targets) split x method x seed of ``suite``, against the installed plugins."""
    registry = get_registry()
    where = f"{suite.path}"
    for key, name in (("dataset", suite.dataset), ("target_dataset", suite.target_dataset)):
        if name is not None and name not in registry.names("dataset"):
            raise ConfigError(f"{where}: {key}: unknown dataset {name!r}; registered: "
                              f"{', '.join(registry.names('dataset'))}")
    methods = resolve_methods(methods or suite.methods, f"{where}: methods")
    domains = registry.create("dataset", suite.dataset, root=suite.data_root).domains
    if suite.protocol == "cross-dataset":
        target_domains = registry.create("dataset", suite.target_dataset, root=suite.data_root).domains
        _check_targets(suite, target_domains)
        splits = [(tuple(domains), tuple(suite.targets or target_domains))]
    else:
        _check_targets(suite, domains)
        splits = (leave_one_out if suite.protocol == "multi-source" else single_source)(domains, suite.targets)
    config = {"backbone": suite.backbone, "preset": suite.preset, "views": suite.views,
              "overrides": suite.overrides, "target_dataset": suite.target_dataset}
    return [
        Job(suite.dataset, suite.protocol, sources, targets, method, seed, config)
        for sources, targets in splits
        for method in methods
        for seed in (suite.seeds[:1] if method == "zero-shot" else suite.seeds)
    ]


def _check_targets(suite: Suite, domains: Sequence[str]) -> None:
    for target in suite.targets or ():
        if target not in domains:
            dataset = suite.target_dataset or suite.dataset
            raise ConfigError(f"{suite.path}: targets: unknown domain {target!r}; domains of {dataset}: "
                              f"{', '.join(domains)}")
