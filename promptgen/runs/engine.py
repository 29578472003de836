"""The engine: one DG run of a method, from its config to its run directory and accuracies.

The engine knows no method: the method plugin named by ``config.method`` composes the other
components (promptgen.components.protocols.Method). A run

1. checks every name and option against the registry (nothing heavy is built before);
2. builds the datasets and plans the domains and classes, then the backbone;
3. lets the method train (``fit``), saves it, and scores "val" and every "test/<domain>" split;
4. writes config.json, the method's files, metrics.json and history.json (promptgen.runs.rundir).

``evaluate_run`` rebuilds the same run from its directory and scores it again.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import attrs
import torch

from promptgen import __version__

from promptgen.runs import rundir
from promptgen.storage.cache import FeatureCache
from promptgen.runs.config import RunConfig, check_names
from promptgen.components.resolve import Settings, build, check_overrides, component_options, effective_options
from promptgen.components.run_values import RunValues
from promptgen.runs.context import RunContext
from promptgen.runs.prompt_distance import distance_to_labels
from promptgen.toolkit.device import cuda_devices, choose_device
from promptgen.errors import ConfigError, PromptgenError
from promptgen.toolkit.evaluate import correct_predictions, pack_correct
from promptgen.paths import check_outside_cache
from promptgen.runs.plan import make_plan
from promptgen.components.presets import preset_for_device, run_preset
from promptgen.components.registry import Registry, default_registry
from promptgen.toolkit.lr_schedules import check_warmup
from promptgen.toolkit.best_epoch import watching


@attrs.frozen
class Checked:
    """A config whose names and options hold: its method (built, cheap) and the resolved preset."""

    config: RunConfig
    preset: str
    method_name: str  # the registered name (an alias resolved)
    method: object
    components: tuple[tuple[str, str], ...]

    @property
    def every_component(self) -> tuple[tuple[str, str], ...]:
        """Every component the run builds: the method, its components, the backbone and the dataset(s) (what the
        dry run lists and config.json records)."""
        return (("method", self.method_name), *self.components, *run_components(self.config))


def unsupported(method, backbone) -> str | None:
    """Why ``method`` (a method or its factory) cannot run on ``backbone`` (a BackboneConfig), or None.

    A method declares it with ``unsupported(backbone) -> str | None`` (e.g. a visual prompt that needs
    a ViT image tower); one that does not declare it runs on every backbone.
    """
    ask = getattr(method, "unsupported", None)
    return ask(backbone) if callable(ask) else None


def check(config: RunConfig, registry: Registry) -> Checked:
    """Check every name and option of ``config`` against ``registry``, building nothing heavy."""
    check_names(config, registry)
    check_overrides(registry, config.overrides)
    preset = preset_for_device(config.preset, choose_device(config.backbone.device).type)
    method_name = registry.canonical("method", config.method)
    settings = Settings.of(config, preset)
    try:
        method = registry.create("method", method_name,
                                 **component_options(registry, "method", method_name, settings))
    except ConfigError as error:  # a bad option value: say which method's (its message may not know its name)
        raise ConfigError(str(error) if str(error).startswith(method_name) else f"method {method_name!r}: {error}") \
            from None
    components = tuple(tuple(pair) for pair in method.components())
    for kind, name in components:
        if not registry.has(kind, name):
            raise ConfigError(f"method {method_name!r} uses {kind.replace('_', ' ')} {name!r}, which is not "
                              f"registered; registered: {', '.join(registry.names(kind)) or 'none'}"
                              f"{registry.unknown_hint(kind, name)}")
    if method.inputs not in ("features", "images"):
        raise ConfigError(f"method {method_name!r}: inputs must be 'features' or 'images', got {method.inputs!r}")
    reason = unsupported(method, config.backbone)
    if reason:
        raise ConfigError(f"method {method_name!r} cannot run on backbone {config.backbone.name!r}: {reason}")
    for kind, name in (("method", method_name), *components):  # the values, as the component derives them
        values = effective_options(registry, kind, name, settings)
        check_warmup(registry.get(kind, name).name, values)  # a schedule that is all warm-up trains nothing
    for kind, name in run_components(config):  # the backbone's and datasets' settings are checked as early
        effective_options(registry, kind, name, settings)
    return Checked(config, preset, method_name, method, components)


def run_components(config: RunConfig) -> tuple[tuple[str, str], ...]:
    """The components every run builds whatever its method: the backbone and the dataset(s)."""
    datasets = (config.dataset,) if config.target_dataset in (None, config.dataset) else \
        (config.dataset, config.target_dataset)
    return (("backbone", config.backbone.name), *(("dataset", name) for name in datasets))


def build_dataset(config: RunConfig, registry: Registry, name: str, preset: str, progress: bool = False):
    """Dataset plugin ``name`` as a run of ``config`` builds it (the one way: a run, its dry run, ``cache
    extract``, the benchmarks): the resolver's options and the run's data root."""
    return build(registry, "dataset", name, Settings.of(config, preset), _run_values(config, progress),
                 root=config.data_root)


def _run_values(config: RunConfig, progress: bool) -> RunValues:
    """The run values of ``config`` before its backbone exists (RunContext.run_values adds the device)."""
    return RunValues(seed=config.seed, progress=progress, cache_dir=config.cache_dir)


def plan_run(config: RunConfig, registry: Registry, checked: Checked, progress: bool):
    """Build the config's datasets (cheap: images are read later) and plan its domains and classes."""
    dataset = build_dataset(config, registry, config.dataset, checked.preset, progress)
    target_dataset = None
    if config.target_dataset is not None and config.target_dataset != config.dataset:
        target_dataset = build_dataset(config, registry, config.target_dataset, checked.preset, progress)
    return make_plan(config.dataset, dataset, config.target_dataset, target_dataset, config.targets, config.sources)


@contextlib.contextmanager
def run_setup(config: RunConfig, registry: Registry, progress: bool, *, checked: Checked | None = None, plan=None,
              reuse_labels: bool = True):
    """The one run setup: under a forked torch RNG seeded with the run's seed (the caller's global RNG is left as
    it was), with the feature cache open, the config checked, planned and its backbone built. Yields
    ``(checked, context)``. reuse_labels=False trains every prompt label instead of loading a stored one (what a
    cost measurement needs: benchmarks/method_costs.py)."""
    with torch.random.fork_rng(devices=cuda_devices()), FeatureCache(config.cache_dir) as cache:
        torch.manual_seed(config.seed)
        checked, context = prepare(config, registry, progress, cache, checked, plan)
        context.reuse_labels = reuse_labels
        yield checked, context


def prepare(config: RunConfig, registry: Registry, progress: bool, cache: FeatureCache,
            checked: Checked | None = None, plan=None) -> tuple[Checked, RunContext]:
    """Check the config and plan it (unless given), then build the backbone: what a method's run needs."""
    checked = checked or check(config, registry)
    plan = plan or plan_run(config, registry, checked, progress)
    backbone = config.backbone.build(registry, Settings.of(config, checked.preset), _run_values(config, progress))
    preset = run_preset(checked.preset)
    views = config.views if config.views is not None else preset["views"]
    epoch = config.epoch if config.epoch is not None else preset["epoch"]
    context = RunContext(config=config, registry=registry, plan=plan, backbone=backbone, preset=checked.preset,
                         views=views, epoch=epoch, progress=progress, cache=cache)
    return checked, context


def _correct(method, context: RunContext, split: str):
    """Which images of ``split`` the method got right (non-finite logits fail the run: ``correct_predictions``)."""
    return correct_predictions(method.logits(context, split), context.labels(split),
                               f"method '{context.config.method}' on {split}")


def _accuracy(correct) -> float:
    return correct.float().mean().item() if len(correct) else float("nan")


def _scores(method, context: RunContext) -> tuple[dict[str, float], dict[str, dict]]:
    """The accuracy of every eval split, and which test images were right (``pack_correct``: what a paired
    test between two methods' tables reads). Non-finite logits fail the run (``correct_predictions``)."""
    scores, predictions = {}, {}
    with context.timed("test"):
        for split in context.eval_splits:
            correct = _correct(method, context, split)
            scores[split] = _accuracy(correct)
            if split.startswith("test/"):
                predictions[split[5:]] = pack_correct(correct, [sample.key for sample in context.samples(split)])
    return scores, predictions


def _checkpoints(method, context: RunContext, watch) -> dict:
    """What a sweep's model selection reads of a run (benchmarks/selection.py): the final model's accuracy on each
    held-out domain's val split (``target_val``), every watched loop's epochs (``loops``: promptgen.toolkit.best_epoch)
    and, per held-out domain, how many of its val images its test split also holds (``val_in_test``: a dataset
    that tests every image of a domain gives an oracle test images to select on, which its table says)."""
    target_val = {}
    with context.timed("checkpoints"):
        for split in context.target_val_splits:
            target_val[split.partition("/")[2]] = _accuracy(_correct(method, context, split))
    overlap = {}
    for domain in context.targets:
        tested = {sample.key for sample in context.samples(f"test/{domain}")}
        overlap[domain] = sum(sample.key in tested for sample in context.samples(f"target-val/{domain}"))
    return {"target_val": target_val, "loops": watch.loops, "val_in_test": overlap}


def _quality(method, context: RunContext):
    quality = getattr(method, "quality", None)
    if quality is None:
        return None
    with context.timed("quality"):
        return quality(context)


def run(config: RunConfig, out_dir: str | Path, *, registry: Registry | None = None, progress: bool = True,
        force: bool = False) -> dict:
    """Train and test one run; write its directory ``out_dir`` and return its metrics.

    registry: the plugins to use (default: the installed ones). The directory appears only when the
    run is complete (promptgen.runs.rundir); one that exists is replaced, whole, only with ``force``. The
    caller's global torch RNG is left as it was: the run seeds its own from ``config.seed``.
    """
    registry = registry or default_registry()
    out = Path(out_dir)
    checked = check(config, registry)  # names and options first, then domains and classes: nothing is
    plan = plan_run(config, registry, checked, progress)  # loaded or written before they hold
    check_outside_cache(out, config.cache_dir)
    work = rundir.start(out, force=force)
    try:
        with run_setup(config, registry, progress, checked=checked, plan=plan) as (checked, context):
            method = checked.method
            rundir.write_config(work, config, checked, context)
            watched = (*context.target_val_splits, *(s for s in context.eval_splits if s.startswith("test/")))
            with context.timed("fit"), (watching(context, watched) if config.checkpoints else
                                        contextlib.nullcontext()) as watch:
                report = method.fit(context) or {}
            method.save(work)
            scores, predictions = _scores(method, context)
            quality = _quality(method, context)
            off_labels = distance_to_labels(method, context)
            metrics = rundir.metrics(config, checked, context, scores, report, quality, versions={
                "promptgen": __version__, "torch": torch.__version__, "python": platform.python_version()})
            # encoded: the image features this run computed (0 where the cache held every one it read)
            metrics["cache"] = {"recomputed_damaged_entries": context.cache.recomputed,
                                "encoded": context.cache.encoded}
            metrics["test_predictions"] = predictions
            if off_labels is not None:
                metrics["prompt_distance"] = off_labels
            if config.checkpoints:
                metrics["checkpoints"] = _checkpoints(method, context, watch)
            rundir.write_metrics(work, metrics, report.get("history"))
        rundir.finish(work, out)
    except BaseException:
        rundir.discard(work)
        raise
    return metrics


@contextlib.contextmanager
def opened(run_dir: str | Path, *, registry: Registry | None = None, progress: bool = True):
    """A finished run rebuilt from its directory: ``(method, context)`` with the method's saved state loaded.

    For analyses of trained runs (re-evaluation, the benchmark's stability study). The feature cache
    stays open and the global torch RNG is seeded from the run's seed (and restored afterwards).
    """
    registry = registry or default_registry()
    run_dir = Path(run_dir)
    config = rundir.load_config(run_dir)
    with run_setup(config, registry, progress) as (checked, context):
        method = checked.method
        try:
            method.load(run_dir, context)
        except (FileNotFoundError, KeyError) as error:
            raise PromptgenError(f"{run_dir}: the {checked.method_name} method's files are incomplete: {error}") \
                from None
        yield method, context


def evaluate_run(run_dir: str | Path, *, registry: Registry | None = None, progress: bool = True) -> dict:
    """Re-evaluate a finished run from its directory: the same features, and the method's saved state."""
    with opened(run_dir, registry=registry, progress=progress) as (method, context):
        scores, predictions = _scores(method, context)
        quality = _quality(method, context)
    return {"test_accuracy": {domain: scores[f"test/{domain}"] for domain in context.targets},
            "val_accuracy": scores["val"], "generator_quality": quality, "test_predictions": predictions}
