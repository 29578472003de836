"""The plan of a run: its datasets, source and target domains, and the classes it classifies.

The three DG protocols are all plans: multi-source (every domain but the targets is a source),
single-source (one source, the other domains targets) and cross-dataset (sources from ``dataset``,
targets from ``target_dataset``, over the classes the two share).
"""

from __future__ import annotations

from typing import Any, Sequence

import attrs

from promptgen.errors import ConfigError, suggestion
from promptgen.toolkit.classes import class_key


def shared_classes(source: Sequence[str], target: Sequence[str]) -> tuple[str, ...]:
    """The source's class names that the target also has (compared by :func:`class_key`), in source order."""
    wanted = {class_key(name) for name in target}
    return tuple(name for name in source if class_key(name) in wanted)


def class_map(names: Sequence[str], classes: Sequence[str]):
    """A tensor [len(names)]: each name's index in ``classes`` (by :func:`class_key`), -1 where it is absent."""
    import torch

    position = {class_key(name): i for i, name in enumerate(classes)}
    return torch.tensor([position.get(class_key(name), -1) for name in names], dtype=torch.long)


@attrs.frozen
class Plan:
    """What a run reads: its datasets (built), source and target domains, and the classes it classifies."""

    dataset_name: str
    dataset: Any
    target_dataset_name: str
    target_dataset: Any
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    classes: tuple[str, ...]
    source_class_map: Any = None  # tensor: dataset label -> index in ``classes`` (-1: not shared); None: identity
    target_class_map: Any = None

    @property
    def cross_dataset(self) -> bool:
        return self.target_dataset is not self.dataset


def make_plan(dataset_name: str, dataset, target_dataset_name: str | None, target_dataset, targets: Sequence[str],
              sources: Sequence[str] | None) -> Plan:
    """Resolve the domains and classes of a run against its (built) datasets, naming any that do not exist."""
    target_dataset_name = target_dataset_name or dataset_name
    target_dataset = target_dataset if target_dataset is not None else dataset
    for domain in targets:
        if domain not in target_dataset.domains:
            raise ConfigError(f"unknown target domain {domain!r}; domains of {target_dataset_name}: "
                              f"{', '.join(target_dataset.domains)}{suggestion(domain, target_dataset.domains)}")
    for domain in sources or ():
        if domain not in dataset.domains:
            raise ConfigError(f"unknown source domain {domain!r}; domains of {dataset_name}: "
                              f"{', '.join(dataset.domains)}{suggestion(domain, dataset.domains)}")
    cross = target_dataset is not dataset
    if sources is None:
        sources = tuple(dataset.domains) if cross else tuple(d for d in dataset.domains if d not in targets)
    if not sources:
        raise ConfigError(f"no source domain left: every domain of {dataset_name} is a target")
    if not cross:
        both = sorted(set(sources) & set(targets))
        if both:
            raise ConfigError(f"domains {both} are both sources and targets")
        return Plan(dataset_name, dataset, target_dataset_name, dataset, tuple(sources), tuple(targets),
                    tuple(dataset.classes))
    classes = shared_classes(dataset.classes, target_dataset.classes)
    if not classes:
        raise ConfigError(f"{dataset_name} and {target_dataset_name} share no class names; a cross-dataset run "
                          f"needs overlapping class lists")
    return Plan(dataset_name, dataset, target_dataset_name, target_dataset, tuple(sources), tuple(targets), classes,
                class_map(dataset.classes, classes), class_map(target_dataset.classes, classes))
