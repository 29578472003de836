"""The two-stage engine: one DG run (source domains -> target domains, method, seed) from features to accuracy.

The three DG protocols are all runs: multi-source (every domain but the target is a source),
single-source (one source, every other domain a target) and cross-dataset (sources from ``dataset``,
targets from ``target_dataset``, over the classes the two share).

Methods are compositions of plugins:
  zero-shot      the hand-written prompt "a photo of a {class}." (prompt learner `zeroshot`)
  coop           one CoOp prompt trained on all source domains pooled
  spg-<gen>      stage I: a CoOp prompt label per source domain; stage II: generator <gen>; test with
                 one generated prompt per image. `spg` means `spg-cgan`.
A run writes its directory: config.json, prompt labels, the generator checkpoint and metrics.json.
"""

from __future__ import annotations

import contextlib
import json
import platform
import time
from pathlib import Path

import attrs
import torch

from promptgen import __version__
from promptgen.cache import FeatureCache
from promptgen.checkpoints import load_generator, load_prompt_label, save_generator, save_prompt_label
from promptgen.config import BackboneConfig, integer, one_of
from promptgen.errors import ConfigError, PromptgenError
from promptgen.evaluate import instance_accuracy, prompt_accuracy
from promptgen.presets import PRESETS, preset
from promptgen.prompts import PromptAssembler
from promptgen.quality import prompt_quality
from promptgen.registry import get_registry
from promptgen.values import FeatureSet


def _method(instance, attribute, value):
    if value in ("zero-shot", "coop", "spg"):
        return
    if value.startswith("spg-") and value[4:] in get_registry().names("generator"):
        return
    generators = ", ".join(f"spg-{g}" for g in get_registry().names("generator"))
    raise ConfigError(f"RunConfig.method must be one of zero-shot, coop, spg, {generators}; got {value!r}")


def _names(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _optional_names(value) -> tuple[str, ...] | None:
    return None if value is None else _names(value)


@attrs.frozen
class RunConfig:
    """One DG run: train on ``sources`` (default: every domain not a target), test on each of ``targets``."""

    dataset: str
    targets: tuple[str, ...] = attrs.field(converter=_names)
    method: str = attrs.field(default="spg", validator=_method)
    seed: int = attrs.field(default=0, validator=integer(0))
    preset: str = attrs.field(default="auto", validator=one_of(("auto", *PRESETS)))
    backbone: BackboneConfig = attrs.field(factory=BackboneConfig)
    views: int | None = None  # augmented views per training image; None: the preset's
    cache_dir: str | None = None
    data_root: str | None = None
    num_workers: int = attrs.field(default=0, validator=integer(0))
    overrides: dict = attrs.field(factory=dict)  # {"coop": {...}, "generator": {...}} on top of the preset
    sources: tuple[str, ...] | None = attrs.field(default=None, converter=_optional_names)
    target_dataset: str | None = None  # cross-dataset: targets are domains of this dataset

    @property
    def generator(self) -> str | None:
        if self.method == "spg":
            return "cgan"
        return self.method[4:] if self.method.startswith("spg-") else None


def resolved_preset(config: RunConfig, device: torch.device) -> tuple[str, dict]:
    name = config.preset if config.preset != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    values = preset(name, config.dataset)
    for part in ("coop", "generator"):
        values[part] = {**values[part], **config.overrides.get(part, {})}
    if config.views is not None:
        values["views"] = config.views
    return name, values


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str):
    """Add the time spent inside the block to ``seconds[stage]``."""
    start = time.perf_counter()
    yield
    seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - start, 3)


@attrs.frozen
class Plan:
    """What a run reads: its datasets, source and target domains, and the classes it classifies."""

    dataset: object
    target_dataset: object
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    classes: tuple[str, ...]
    source_classes: torch.Tensor | None  # dataset label -> index in ``classes`` (-1: not shared); None: identity
    target_classes: torch.Tensor | None


def plan(config: RunConfig) -> Plan:
    """Resolve a config's domains and classes against its dataset plugins, naming any that do not exist."""
    registry = get_registry()
    dataset = registry.create("dataset", config.dataset, root=config.data_root)
    target_name = config.target_dataset or config.dataset
    target_dataset = dataset if target_name == config.dataset else registry.create(
        "dataset", target_name, root=config.data_root)
    for domain in config.targets:
        if domain not in target_dataset.domains:
            raise ConfigError(f"unknown target domain {domain!r}; domains of {target_name}: "
                              f"{', '.join(target_dataset.domains)}")
    if config.sources is not None:
        for domain in config.sources:
            if domain not in dataset.domains:
                raise ConfigError(f"unknown source domain {domain!r}; domains of {config.dataset}: "
                                  f"{', '.join(dataset.domains)}")
        sources = config.sources
    elif target_dataset is dataset:
        sources = tuple(d for d in dataset.domains if d not in config.targets)
    else:
        sources = tuple(dataset.domains)
    if target_dataset is dataset:
        if set(sources) & set(config.targets):
            raise ConfigError(f"domains {sorted(set(sources) & set(config.targets))} are both sources and targets")
        return Plan(dataset, dataset, sources, config.targets, tuple(dataset.classes), None, None)
    classes = shared_classes(dataset.classes, target_dataset.classes)
    if not classes:
        raise ConfigError(f"{config.dataset} and {target_name} share no class names; a cross-dataset run "
                          f"needs overlapping class lists")
    return Plan(dataset, target_dataset, sources, config.targets, classes,
                _class_map(dataset.classes, classes), _class_map(target_dataset.classes, classes))


def _normal(name: str) -> str:
    return name.lower().replace("_", " ").replace("-", " ").strip()


def shared_classes(source: tuple[str, ...], target: tuple[str, ...]) -> tuple[str, ...]:
    """The source's class names that the target also has (case, '_' and '-' ignored), in source order."""
    wanted = {_normal(name) for name in target}
    return tuple(name for name in source if _normal(name) in wanted)


def _class_map(names, classes) -> torch.Tensor:
    position = {_normal(name): i for i, name in enumerate(classes)}
    return torch.tensor([position.get(_normal(name), -1) for name in names], dtype=torch.long)


def _restrict(features: FeatureSet, class_map: torch.Tensor | None) -> FeatureSet:
    """Keep the samples of shared classes, relabelled to their index among the shared classes."""
    if class_map is None:
        return features
    labels = class_map[features.labels]
    keep = labels >= 0
    return FeatureSet(features.features[keep], labels[keep], features.domain_ids[keep])


def _features(config: RunConfig, plan: Plan, backbone, views: int, progress: bool,
              splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, FeatureSet]:
    """Source train (K views) and val features and one test FeatureSet per target ("test/<domain>"), from the cache."""
    with FeatureCache(config.cache_dir) as cache:
        def get(dataset, name, domains, split, train, class_map):
            samples = [s for d in domains for s in dataset.samples(d, split)]
            features = cache.get(backbone, dataset, name, samples, train=train, views=views if train else 1,
                                 num_workers=config.num_workers, progress=progress)
            return _restrict(features, class_map)

        target_name = config.target_dataset or config.dataset
        out = {}
        for split in splits:
            if split == "test":
                for domain in plan.targets:
                    out[f"test/{domain}"] = get(plan.target_dataset, target_name, [domain], "test", False,
                                                plan.target_classes)
            else:
                out[split] = get(plan.dataset, config.dataset, plan.sources, split, split == "train",
                                 plan.source_classes)
        return out


def _subset(features: FeatureSet, domain_id: int) -> FeatureSet:
    keep = features.domain_ids == domain_id
    return FeatureSet(features.features[keep], features.labels[keep], features.domain_ids[keep])


def _remap_domains(features: FeatureSet, domain_ids: list[int]) -> FeatureSet:
    """Dataset domain indices -> positions in ``domain_ids`` (the order of the prompt labels)."""
    table = torch.full((max(domain_ids) + 1,), -1, dtype=torch.long)
    table[torch.tensor(domain_ids)] = torch.arange(len(domain_ids))
    return FeatureSet(features.features, features.labels, table[features.domain_ids])


def run(config: RunConfig, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train and test one run; write config.json, checkpoints and metrics.json under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    registry = get_registry()
    seconds: dict[str, float] = {}
    backbone = config.backbone.build()
    resolved = plan(config)
    preset_name, values = resolved_preset(config, backbone.device)
    (out / "config.json").write_text(json.dumps(
        {"run": attrs.asdict(config), "preset": preset_name, "resolved": values}, indent=2, default=str) + "\n")

    with _timed(seconds, "features"):
        # zero-shot learns nothing: it needs no training features
        splits = ("val", "test") if config.method == "zero-shot" else ("train", "val", "test")
        features = _features(config, resolved, backbone, values["views"], progress, splits)
    sources, classes = resolved.sources, resolved.classes
    source_ids = [resolved.dataset.domains.index(d) for d in sources]
    learner_options = {**values["coop"], "seed": config.seed, "progress": progress}

    if config.generator is None:
        with _timed(seconds, "stage1"):
            if config.method == "zero-shot":
                label = registry.create("prompt_learner", "zeroshot").fit(backbone, classes, None, None, "all")
            else:
                learner = registry.create("prompt_learner", "coop", **learner_options)
                label = learner.fit(backbone, classes, features["train"], features["val"], "+".join(sources))
        save_prompt_label(label, out / "prompt_label")
        with _timed(seconds, "test"):
            accuracy = {split: prompt_accuracy(backbone, label, part) for split, part in features.items()
                        if split != "train"}
        fit_report, quality = {}, None
    else:
        labels = []
        with _timed(seconds, "stage1"):
            for domain, domain_id in zip(sources, source_ids):
                learner = registry.create("prompt_learner", "coop", **learner_options)
                label = learner.fit(backbone, classes, _subset(features["train"], domain_id),
                                    _subset(features["val"], domain_id), domain)
                save_prompt_label(label, out / "prompt_labels" / domain)
                labels.append(label)
        options = {"feature_dim": backbone.embed_dim, "n_ctx": labels[0].n_ctx, "ctx_dim": backbone.ctx_dim,
                   **values["generator"], "seed": config.seed}
        generator = registry.create("generator", config.generator, **options, progress=progress)
        with _timed(seconds, "stage2"):
            fit_report = generator.fit(backbone, _remap_domains(features["train"], source_ids), labels,
                                       features["val"]) or {}
        save_generator(generator, config.generator, options, out / "generator")
        with _timed(seconds, "quality"):
            quality = prompt_quality(backbone, generator, labels, _remap_domains(features["val"], source_ids))
        with _timed(seconds, "test"):
            assembler = PromptAssembler(backbone, classes, labels[0].n_ctx)
            accuracy = {split: instance_accuracy(backbone, assembler, generator, part)
                        for split, part in features.items() if split != "train"}

    metrics = {
        "dataset": config.dataset, "target_dataset": config.target_dataset or config.dataset,
        "sources": list(sources), "targets": list(resolved.targets), "classes": len(classes),
        "method": config.method, "seed": config.seed, "preset": preset_name, "fingerprint": backbone.fingerprint,
        "test_accuracy": {domain: accuracy[f"test/{domain}"] for domain in resolved.targets},
        "val_accuracy": accuracy["val"],
        "model_selection": "training-domain validation (val split of the source domains)",
        "seconds": seconds, "sizes": {k: len(v) for k, v in features.items()},
        "fit": {k: v for k, v in fit_report.items() if k != "history"},
        "generator_quality": quality,
        "versions": {"promptgen": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if "history" in fit_report:
        (out / "history.json").write_text(json.dumps(fit_report["history"], indent=2) + "\n")
    return metrics


def load_run_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise PromptgenError(f"{run_dir} is not a run directory: {path.name} is missing")
    saved = json.loads(path.read_text())["run"]
    return RunConfig(**{**saved, "backbone": BackboneConfig(**saved["backbone"])})


def evaluate_run(run_dir: str | Path, *, progress: bool = True) -> dict:
    """Re-evaluate a finished run from its directory: the same features, prompts and generator."""
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    backbone = config.backbone.build()
    resolved = plan(config)
    features = _features(config, resolved, backbone, 1, progress, splits=("val", "test"))  # no training here
    quality = None
    if config.generator is None:
        label = load_prompt_label(run_dir / "prompt_label")
        _check_fingerprint(label.fingerprint, backbone, run_dir)
        accuracy = {split: prompt_accuracy(backbone, label, part) for split, part in features.items()}
    else:
        generator, _, options = load_generator(run_dir / "generator")
        labels = [load_prompt_label(run_dir / "prompt_labels" / domain) for domain in resolved.sources]
        _check_fingerprint(labels[0].fingerprint, backbone, run_dir)
        assembler = PromptAssembler(backbone, resolved.classes, options["n_ctx"])
        accuracy = {split: instance_accuracy(backbone, assembler, generator, part) for split, part in features.items()}
        source_ids = [resolved.dataset.domains.index(d) for d in resolved.sources]
        quality = prompt_quality(backbone, generator, labels, _remap_domains(features["val"], source_ids))
    return {"test_accuracy": {domain: accuracy[f"test/{domain}"] for domain in resolved.targets},
            "val_accuracy": accuracy["val"], "generator_quality": quality}


def _check_fingerprint(expected: str, backbone, run_dir: Path) -> None:
    if expected != backbone.fingerprint:
        raise PromptgenError(f"{run_dir}: trained with backbone {expected}, but the backbone now loads as "
                             f"{backbone.fingerprint}; pass the same weights")
