"""The three DG protocols, each expanding a suite into independent jobs.

  multi-source   leave one domain out: for each target, train on every other domain
  single-source  for each source, train on it alone and test on every other domain
  cross-dataset  train on every domain of one dataset, test on each domain of another (shared classes)

A method whose result does not depend on the seed (``deterministic = True``, e.g. zero-shot) runs
with the first seed only. Every job's config is checked against the registry (names, options)
before any job runs.
"""

from __future__ import annotations

import logging
from typing import Sequence

import attrs

from benchmarks import search
from benchmarks.records import Job
from benchmarks.suites import Suite
from promptgen.toolkit.device import choose_device
from promptgen.components.lazy import factory_attribute
from promptgen.runs.engine import build_dataset, check
from promptgen.errors import ConfigError, PromptgenError, suggestion
from promptgen.components.presets import preset_for_device
from promptgen.components.resolve import check_overrides

log = logging.getLogger(__name__)


def method_attribute(registry, name: str, attribute: str, default):
    """An attribute a method's factory declares, else ``default``: on a functools.partial (``spg-<generator>``)
    its own first (a family sets each member's ``rank`` there), then the function it wraps."""
    return factory_attribute(registry.get("method", name).factory, attribute, default)


def method_rank(registry, name: str) -> tuple:
    """Table order: a method's ``rank`` attribute (its place in the SPG paper's table), then its name."""
    return (method_attribute(registry, name, "rank", 1000), name)


def all_methods(registry) -> tuple[str, ...]:
    """Every registered method, in table order."""
    return tuple(sorted(registry.names("method"), key=lambda name: method_rank(registry, name)))


def resolve_methods(methods: Sequence[str], where: str, registry, backbone=None,
                    skipped: list | None = None) -> tuple[str, ...]:
    """Expand "all" and aliases (e.g. ``spg`` -> ``spg-cgan``); name ``where`` (file: key) for an unknown method.

    "all" is every registered method that can run on ``backbone`` (a BackboneConfig): the others are
    left out, each (name, reason) appended to ``skipped`` and logged at INFO. A method named
    explicitly is checked per job (and refused there, with its reason).
    """
    known = all_methods(registry)
    aliases = sorted(alias for (kind, alias) in registry.aliases if kind == "method")
    resolved = []
    for method in methods:
        if method != "all" and not registry.has("method", method):
            raise ConfigError(f"{where}: unknown method {method!r}; methods: all, {', '.join(aliases + list(known))}"
                              f"{registry.unknown_hint('method', method)}")
        for name in known if method == "all" else (registry.canonical("method", method),):
            ask = method_attribute(registry, name, "unsupported", None) if method == "all" and backbone else None
            reason = ask(backbone) if callable(ask) else None
            if reason:
                log.info("%s: skipping method %s: %s", where, name, reason)
                if skipped is not None:
                    skipped.append((name, reason))
            elif name not in resolved:
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


def _domains(suite: Suite, registry, name: str) -> tuple[str, ...]:
    example = suite.example()
    preset = preset_for_device(example.preset, choose_device(example.backbone.device).type)
    return tuple(build_dataset(example, registry, name, preset, progress=False).domains)


def expand(suite: Suite, registry, methods: Sequence[str] | None = None, skipped: list | None = None,
           notes: list | None = None) -> list[Job]:
    """Every (sources, targets) split x method x seed of ``suite``, each job's config checked against ``registry``;
    a suite with ``hparams``: every trial of each, and the runs leave-one-domain-out selection needs
    (benchmarks.search).

    skipped: a list that receives (method, reason) for each method "all" leaves out; notes: one that receives a
    line for each selection method the search leaves out.
    """
    if suite.datasets:
        return [job for part in _parts_with_targets(suite, registry)
                for job in expand(part, registry, methods, skipped, notes)]
    where = f"{suite.path}"
    example = suite.example()
    for key, name in (("dataset", example.dataset), ("target_dataset", example.target_dataset)):
        if name is not None and not registry.has("dataset", name):
            raise ConfigError(f"{where}: {key}: unknown dataset {name!r}; registered: "
                              f"{', '.join(registry.names('dataset'))}{registry.unknown_hint('dataset', name)}")
    methods = resolve_methods(methods or suite.methods, f"{where}: methods", registry, example.backbone, skipped)
    domains = _domains(suite, registry, example.dataset)
    if suite.protocol == "cross-dataset":
        target_domains = _domains(suite, registry, example.target_dataset)
        _check_targets(suite, target_domains)
        splits = [(domains, tuple(suite.targets or target_domains))]
    else:
        _check_targets(suite, domains)
        splits = (leave_one_out if suite.protocol == "multi-source" else single_source)(domains, suite.targets)
    # A launcher's settings (--set ray.address=...) say where jobs run, not what they compute: they stay out of the
    # jobs' configs, so that a sweep resumed on another cluster or with other workers finds its records.
    launchers = {name for name in example.overrides if registry.has("launcher", name)}
    try:  # checked here, as the sections the jobs keep are (check, below)
        check_overrides(registry, {name: example.overrides[name] for name in launchers})
    except PromptgenError as error:
        raise ConfigError(f"{where}: {error}") from None
    jobs = []
    for method in methods:
        deterministic = method_attribute(registry, method, "deterministic", False)
        for sources, targets in splits:
            for seed in suite.seeds[:1] if deterministic else suite.seeds:
                config = suite.run_config(targets=targets, sources=sources, method=method, seed=seed)
                if launchers:
                    config = attrs.evolve(config, overrides={name: values for name, values in config.overrides.items()
                                                             if name not in launchers})
                jobs.append(Job(suite.protocol, config))
    jobs.sort(key=lambda job: (splits.index((job.config.sources, job.config.targets)), methods.index(job.method)))
    for job in {job.method: job for job in jobs}.values():  # one job per method: the others differ in domains
        try:
            check(job.config, registry)
        except PromptgenError as error:
            raise ConfigError(f"{where}: {error}") from None
    if suite.search is not None:
        try:
            jobs = search.expand(suite.search, jobs, registry, lambda config: _searched_components(config, registry),
                                 notes)
        except PromptgenError as error:
            raise ConfigError(f"{where}: hparams: {error}") from None
    return jobs


def _searched_components(config, registry) -> tuple[tuple[str, str], ...]:
    """The components a search draws values for: the method and the components it builds (not the backbone or the
    dataset: what is searched is how a method trains, not what it trains on)."""
    checked = check(config, registry)
    return (("method", checked.method_name), *checked.components)


def _parts_with_targets(suite: Suite, registry) -> list[Suite]:
    """A multi-dataset suite's datasets; with ``targets``, each keeps the targets that are its domains, and a
    dataset with none of them is left out (``--targets photo`` on digits-dg + digits-traps runs digits-dg)."""
    if not suite.targets:
        return suite.parts()
    parts, matched, every = [], set(), []
    for part in suite.parts():
        domains = _domains(part, registry, part.dataset)
        every += domains
        mine = tuple(target for target in suite.targets if target in domains)
        matched.update(mine)
        if mine:
            parts.append(attrs.evolve(part, targets=mine))
    unknown = [target for target in suite.targets if target not in matched]
    if unknown:
        raise ConfigError(f"{suite.path}: targets: unknown domain {unknown[0]!r}: no domain of "
                          f"{', '.join(suite.datasets)}{suggestion(unknown[0], every)}")
    return parts


def _check_targets(suite: Suite, domains: Sequence[str]) -> None:
    for target in suite.targets or ():
        if target not in domains:
            dataset = suite.target_dataset or suite.dataset
            raise ConfigError(f"{suite.path}: targets: unknown domain {target!r}; domains of {dataset}: "
                              f"{', '.join(domains)}{suggestion(target, domains)}")
