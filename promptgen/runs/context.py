"""RunContext: what a method sees of its run, and the only way it builds the components it composes.

A method is handed a RunContext in ``fit``, ``logits`` and ``load``. Through it the method reads

- the frozen backbone, the classes it classifies, the source and target domains;
- the samples, image features (from the feature cache, computed once) or images of each split:
  "train" (the sources' train splits, ``views`` augmented views per image, grouped by image when an
  epoch is one pass over the images), "val" (the sources' val splits: model selection) and
  "test/<domain>" for each target;
- its components, built with their own options (preset values, then the run's overrides) plus
  the arguments their hook specification names;
- stage I: :meth:`RunContext.prompt_labels`, one prompt label per source domain;
- a stage timer whose seconds go into the run's metrics.

Labels of every split index ``classes`` (a cross-dataset run keeps and relabels the shared ones).
Domain ids of "train" and "val" index ``sources``; those of a test split are 0.
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import Any, Iterator, Sequence

import attrs
import torch

from promptgen.errors import ConfigError, suggestion
from promptgen.components.lazy import resolve
from promptgen.components.options import RUN_VALUES, check_values
from promptgen.runs.plan import Plan
from promptgen.components.presets import component_preset
from promptgen.toolkit.values import FeatureSet, PromptLabel, Sample


def resolve_options(registry, kind: str, name: str, preset: str, dataset: str | None, overrides: dict) -> dict:
    """A component's option values: its preset's (for ``dataset``), then the run's overrides of its name.

    A factory may declare ``settings_from``: other components' sections whose settings it takes too, before
    its own (SPG's stage I learner ``spg-coop`` is CoOp with other preset values: ``--set coop.epochs=2``
    reaches it as it reaches ``coop``, ``--set spg-coop.epochs=2`` only it)."""
    component = registry.get(kind, name)
    declared = component.options
    values = check_values(declared, component_preset(component.factory, preset, dataset),
                          f"{component.where}, preset '{preset}'")
    for section_name in (*(_factory_attribute(component.factory, "settings_from") or ()), component.name):
        section = overrides.get(section_name, {})
        values.update(check_values(declared, {k: v for k, v in section.items() if k in declared}, component.where))
    return values


def effective_options(registry, kind: str, name: str, preset: str, dataset: str | None, overrides: dict) -> dict:
    """Every option's value as the component will run with it: its default, then :func:`resolve_options`'s,
    then what the component derives from them (run-level values, ``seed`` included, left out).

    A factory may declare ``effective_options(values) -> values`` (a static or class method beside its
    ``presets``): the options it derives from others (CoOp's ``n_ctx`` from ``ctx_init``), raising a
    ConfigError for settings that contradict each other. What a dry run prints and what the run checks
    (promptgen.toolkit.schedules.check_warmup) are these values.
    """
    component = registry.get(kind, name)
    values = {key: option.default for key, option in component.options.items()
              if not option.required and key not in RUN_VALUES}
    values.update(resolve_options(registry, kind, name, preset, dataset, overrides))
    derive = _factory_attribute(component.factory, "effective_options")
    if derive is None:
        return values
    try:
        return dict(derive(dict(values)))
    except ConfigError as error:  # name the component the user sets (its message may not)
        raise ConfigError(str(error) if str(error).startswith(component.name) else f"{component.name}: {error}") \
            from None


def _factory_attribute(factory, attribute: str):
    """An attribute of the class behind ``factory`` (a class, functools.partial or lazy reference), else None."""
    factory = resolve(factory)
    while not hasattr(factory, attribute) and isinstance(factory, functools.partial):
        factory = factory.func
    return getattr(factory, attribute, None)


def check_overrides(registry, overrides: dict) -> None:
    """Every key is an option of a component of its section's name (the sections themselves are checked by
    promptgen.runs.config.check_names, which engine.check runs first, importing no component)."""
    for section, values in overrides.items():
        components = [c for c in registry if c.name == section or section in c.aliases]
        for key, value in values.items():
            owners = [c for c in components if key in c.options]
            if not owners:
                listed = "; ".join(f"{c.where}: {', '.join(c.options) or 'none'}" for c in components)
                raise ConfigError(f"{section}: unknown option {key!r}; options of {listed}"
                                  f"{suggestion(key, [option for c in components for option in c.options])}")
            for component in owners:
                component.options[key].check(value, component.where)


@attrs.define
class RunContext:
    """One run as a method sees it (see the module docstring)."""

    config: Any  # the RunConfig
    registry: Any
    plan: Plan
    backbone: Any
    preset: str  # the resolved preset name: cpu or gpu
    views: int
    epoch: str = "images"  # what a training epoch iterates: "images" (one view of each) or "views" (every view)
    progress: bool = True
    cache: Any = None  # a FeatureCache, open for the run's duration
    seconds: dict = attrs.field(factory=dict)
    _features: dict = attrs.field(factory=dict)
    _timers: list = attrs.field(factory=list)

    # --- what the run is ------------------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def classes(self) -> tuple[str, ...]:
        return self.plan.classes

    @property
    def sources(self) -> tuple[str, ...]:
        return self.plan.sources

    @property
    def targets(self) -> tuple[str, ...]:
        return self.plan.targets

    @property
    def eval_splits(self) -> tuple[str, ...]:
        """The splits a run scores: "val", then "test/<domain>" per target."""
        return ("val", *(f"test/{domain}" for domain in self.targets))

    # --- data -----------------------------------------------------------------------------------

    def _side(self, split: str) -> tuple[str, Any, tuple[str, ...], Any, str]:
        """(dataset name, dataset, domains, class map, dataset split) behind a split name."""
        if split in ("train", "val"):
            return self.plan.dataset_name, self.plan.dataset, self.sources, self.plan.source_class_map, split
        if split.startswith("test/") and split[5:] in self.targets:
            plan = self.plan
            return plan.target_dataset_name, plan.target_dataset, (split[5:],), plan.target_class_map, "test"
        raise ConfigError(f"unknown split {split!r}; splits: train, {', '.join(self.eval_splits)}")

    def samples(self, split: str) -> list[Sample]:
        """The split's samples, in the run's order, labelled by their index in ``classes``."""
        _, dataset, domains, class_map, part = self._side(split)
        samples = [s for domain in domains for s in dataset.samples(domain, part)]
        if class_map is None:
            return samples
        return [attrs.evolve(s, label=int(class_map[s.label])) for s in samples if class_map[s.label] >= 0]

    def labels(self, split: str) -> torch.Tensor:
        return torch.tensor([s.label for s in self.samples(split)], dtype=torch.long)

    def dataset(self, split: str):
        """The dataset plugin whose images a split holds (to load them: ``dataset.load_image(sample)``)."""
        return self._side(split)[1]

    def features(self, split: str) -> FeatureSet:
        """Image features of a split from the feature cache (computed once per backbone, transform and view).

        "train" holds ``views`` augmented views of every image, view-major ([views * N, E]), its
        ``image_ids`` naming the image of each row when the run's ``epoch`` is "images" (an epoch then
        visits each image once: promptgen.toolkit.epochs) and None when it is "views" (every view counts as an
        image); the others one eval-transform feature per image.
        """
        if split not in self._features:
            name, dataset, domains, _, _ = self._side(split)
            train = split == "train"
            with self.timed("features"):
                features = self.cache.get(self.backbone, dataset, name, self.samples(split), train=train,
                                          views=self.views if train else 1, num_workers=self.config.num_workers,
                                          progress=self.progress)
            table = torch.full((len(dataset.domains),), -1, dtype=torch.long)
            table[[dataset.domains.index(d) for d in domains]] = torch.arange(len(domains)) if split in (
                "train", "val") else 0
            features = features.with_domains(table)
            if not train or self.epoch == "views":
                features = attrs.evolve(features, image_ids=None)
            self._features[split] = features
        return self._features[split]

    def images(self, split: str, *, train: bool = False):
        """A torch Dataset of (pixels, label, domain id) for the split, through the backbone's train or eval
        transform: for methods whose ``inputs`` are "images"."""
        from promptgen.toolkit.data import SampleImages

        return SampleImages(self.dataset(split), self.samples(split), self.backbone.image_transform(train))

    # --- components -----------------------------------------------------------------------------

    def options(self, kind: str, name: str) -> dict:
        """The options component ``name`` of ``kind`` receives: preset values, overrides, run values it declares."""
        values = resolve_options(self.registry, kind, name, self.preset, self.plan.dataset_name,
                                 self.config.overrides)
        declared = self.registry.get(kind, name).options
        run_values = {"seed": self.seed, "progress": self.progress, "cache_dir": self.config.cache_dir}
        values.update({key: value for key, value in run_values.items() if key in declared and key not in values})
        return values

    def create(self, kind: str, name: str, **arguments) -> Any:
        """Build a component with its options; ``arguments`` are those its hook specification names."""
        return self.registry.create(kind, name, **arguments, **self.options(kind, name))

    def prompt_labels(self, learner: str, domains: Sequence[str] | None = None) -> list[PromptLabel]:
        """Stage I: one prompt label per source domain (``domains``, default all sources), each learned by
        prompt learner ``learner`` on that domain's train features, selected on its val features, or loaded
        from the label store when a run already computed the same (promptgen.storage.label_store)."""
        from promptgen.storage import label_store

        train_samples, val_samples = self.samples("train"), self.samples("val")
        labels = []
        for domain in domains or self.sources:
            index = self.sources.index(domain)
            key = label_store.label_key(self, learner, domain, [s for s in train_samples if s.domain == domain],
                                        [s for s in val_samples if s.domain == domain])

            def fit(index=index, domain=domain):
                train, val = self.features("train"), self.features("val")
                return self.create("prompt_learner", learner).fit(self.backbone, self.classes, train.of_domain(index),
                                                                  val.of_domain(index), domain)

            labels.append(label_store.fetch_or_fit(self, key, fit))
        return labels

    # --- time -----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the seconds spent in the block to ``seconds[stage]``; time in a nested block counts for it alone."""
        start = time.perf_counter()
        self._timers.append(0.0)  # seconds that nested blocks took
        try:
            yield
        finally:
            nested = self._timers.pop()
            spent = time.perf_counter() - start
            if self._timers:
                self._timers[-1] += spent
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + spent - nested, 3)
