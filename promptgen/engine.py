"""The two-stage engine: one DG run (dataset, held-out target, method, seed) from features to test accuracy.

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
from promptgen.registry import get_registry
from promptgen.values import FeatureSet


def _method(instance, attribute, value):
    if value in ("zero-shot", "coop", "spg"):
        return
    if value.startswith("spg-") and value[4:] in get_registry().names("generator"):
        return
    generators = ", ".join(f"spg-{g}" for g in get_registry().names("generator"))
    raise ConfigError(f"RunConfig.method must be one of zero-shot, coop, spg, {generators}; got {value!r}")


@attrs.frozen
class RunConfig:
    """One DG run: train on every domain but ``target``, test on ``target``."""

    dataset: str
    target: str
    method: str = attrs.field(default="spg", validator=_method)
    seed: int = attrs.field(default=0, validator=integer(0))
    preset: str = attrs.field(default="auto", validator=one_of(("auto", *PRESETS)))
    backbone: BackboneConfig = attrs.field(factory=BackboneConfig)
    views: int | None = None  # augmented views per training image; None: the preset's
    cache_dir: str | None = None
    data_root: str | None = None
    num_workers: int = attrs.field(default=0, validator=integer(0))
    overrides: dict = attrs.field(factory=dict)  # {"coop": {...}, "generator": {...}} on top of the preset

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


def _features(config: RunConfig, backbone, dataset, views: int, progress: bool,
              splits: tuple[str, ...] = ("train", "val", "test")) -> dict[str, FeatureSet]:
    """Source train (K views), source val and target test features, from the cache; only ``splits``."""
    if config.target not in dataset.domains:
        raise ConfigError(f"unknown target domain {config.target!r}; domains of {config.dataset}: "
                          f"{', '.join(dataset.domains)}")
    sources = [d for d in dataset.domains if d != config.target]
    with FeatureCache(config.cache_dir) as cache:
        def get(domains, split, train):
            samples = [s for d in domains for s in dataset.samples(d, split)]
            return cache.get(backbone, dataset, config.dataset, samples, train=train, views=views if train else 1,
                             num_workers=config.num_workers, progress=progress)

        parts = {"train": (sources, True), "val": (sources, False), "test": ([config.target], False)}
        return {split: get(parts[split][0], split, parts[split][1]) for split in splits}


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
    dataset = registry.create("dataset", config.dataset, root=config.data_root)
    preset_name, values = resolved_preset(config, backbone.device)
    (out / "config.json").write_text(json.dumps(
        {"run": attrs.asdict(config), "preset": preset_name, "resolved": values}, indent=2, default=str) + "\n")

    with _timed(seconds, "features"):
        features = _features(config, backbone, dataset, values["views"], progress)
    sources = [d for d in dataset.domains if d != config.target]
    source_ids = [dataset.domains.index(d) for d in sources]
    classes = dataset.classes
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
            val_accuracy = prompt_accuracy(backbone, label, features["val"])
            test_accuracy = prompt_accuracy(backbone, label, features["test"])
        fit_report = {}
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
        with _timed(seconds, "test"):
            assembler = PromptAssembler(backbone, classes, labels[0].n_ctx)
            val_accuracy = instance_accuracy(backbone, assembler, generator, features["val"])
            test_accuracy = instance_accuracy(backbone, assembler, generator, features["test"])

    metrics = {
        "dataset": config.dataset, "target": config.target, "sources": sources, "method": config.method,
        "seed": config.seed, "preset": preset_name, "fingerprint": backbone.fingerprint,
        "test_accuracy": test_accuracy, "val_accuracy": val_accuracy,
        "model_selection": "training-domain validation (val split of the source domains)",
        "seconds": seconds, "sizes": {k: len(v) for k, v in features.items()},
        "fit": {k: v for k, v in fit_report.items() if k != "history"},
        "versions": {"promptgen": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if "history" in fit_report:
        (out / "history.json").write_text(json.dumps(fit_report["history"], indent=2) + "\n")
    return metrics


def evaluate_run(run_dir: str | Path, *, progress: bool = True) -> dict:
    """Re-evaluate a finished run from its directory: the same features, prompts and generator."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise PromptgenError(f"{run_dir} is not a run directory: {path.name} is missing")
    saved = json.loads(path.read_text())["run"]
    config = RunConfig(**{**saved, "backbone": BackboneConfig(**saved["backbone"])})
    backbone = config.backbone.build()
    dataset = get_registry().create("dataset", config.dataset, root=config.data_root)
    features = _features(config, backbone, dataset, 1, progress, splits=("val", "test"))  # no training here
    if config.generator is None:
        label = load_prompt_label(run_dir / "prompt_label")
        _check_fingerprint(label.fingerprint, backbone, run_dir)
        return {"test_accuracy": prompt_accuracy(backbone, label, features["test"]),
                "val_accuracy": prompt_accuracy(backbone, label, features["val"])}
    generator, _, options = load_generator(run_dir / "generator")
    first = sorted((run_dir / "prompt_labels").glob("*.json"))[0]
    _check_fingerprint(load_prompt_label(first).fingerprint, backbone, run_dir)
    assembler = PromptAssembler(backbone, dataset.classes, options["n_ctx"])
    return {"test_accuracy": instance_accuracy(backbone, assembler, generator, features["test"]),
            "val_accuracy": instance_accuracy(backbone, assembler, generator, features["val"])}


def _check_fingerprint(expected: str, backbone, run_dir: Path) -> None:
    if expected != backbone.fingerprint:
        raise PromptgenError(f"{run_dir}: trained with backbone {expected}, but the backbone now loads as "
                             f"{backbone.fingerprint}; pass the same weights")
