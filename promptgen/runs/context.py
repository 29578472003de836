"""RunContext: what a method sees of its run, and the only way it builds the components it composes.

A method is handed a RunContext in ``fit``, ``logits`` and ``load``. Through it the method reads

- the frozen backbone, the classes it classifies, the source and target domains;
- the samples, image features (from the feature cache, computed once) or images of each split:
  "train" (the sources' train splits, ``views`` augmented views per image, grouped by image when an
  epoch is one pass over the images), "val" (the sources' val splits: model selection) and
  "test/<domain>" for each target ("target-val/<domain>": its val split, for an oracle's selection only);
- its components, built with their own options (preset values, then the run's overrides) plus
  the arguments their hook specification names;
- stage I: :meth:`RunContext.prompt_labels`, one prompt label per source domain;
- a stage timer whose seconds go into the run's metrics.

Labels of every split index ``classes`` (a cross-dataset run keeps and relabels the shared ones).
Domain ids of "train" and "val" index ``sources``; those of a test split are 0.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator, Sequence

import attrs
import torch

from promptgen.components.resolve import Settings, build, component_options
from promptgen.components.run_values import RunValues
from promptgen.errors import ConfigError
from promptgen.runs.plan import Plan
from promptgen.values import FeatureSet, PromptLabel, Sample


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
    reuse_labels: bool = True  # False: every prompt label trained, none loaded (promptgen.storage.label_store)
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

    @property
    def target_val_splits(self) -> tuple[str, ...]:
        """The held-out domains' own validation splits, "target-val/<domain>": what only an oracle selects on
        (a run scores them when it records checkpoints for a sweep's model selection)."""
        return tuple(f"target-val/{domain}" for domain in self.targets)

    # --- data -----------------------------------------------------------------------------------

    def _side(self, split: str) -> tuple[str, Any, tuple[str, ...], Any, str]:
        """(dataset name, dataset, domains, class map, dataset split) behind a split name."""
        if split in ("train", "val"):
            return self.plan.dataset_name, self.plan.dataset, self.sources, self.plan.source_class_map, split
        kind, _, domain = split.partition("/")
        if kind in ("test", "target-val") and domain in self.targets:
            plan = self.plan
            return (plan.target_dataset_name, plan.target_dataset, (domain,), plan.target_class_map,
                    "test" if kind == "test" else "val")
        raise ConfigError(f"unknown split {split!r}; splits: train, {', '.join(self.eval_splits)}, "
                          f"{', '.join(self.target_val_splits)}")

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

    @property
    def settings(self) -> Settings:
        """What the run says about its components' options (promptgen.components.resolve)."""
        return Settings.of(self.config, self.preset)

    @property
    def run_values(self) -> RunValues:
        return RunValues(seed=self.seed, progress=self.progress, cache_dir=self.config.cache_dir,
                         device=getattr(self.backbone, "device", None))

    def options(self, kind: str, name: str) -> dict:
        """The options component ``name`` of ``kind`` receives: preset values, overrides, run values it declares."""
        return component_options(self.registry, kind, name, self.settings, self.run_values)

    def create(self, kind: str, name: str, **arguments) -> Any:
        """Build a component with its options; ``arguments`` are those its hook specification names."""
        return build(self.registry, kind, name, self.settings, self.run_values, **arguments)

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
