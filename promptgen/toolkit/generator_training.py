"""What stage II generators share: the epoch loop with model selection, the image condition, prompt scaling.

Every generator plugin learns p(prompt | image feature) from (domain prompt label, feature) pairs and
keeps the epoch whose generated prompts classify the source domains' validation split best. The
loop lives here once; a generator supplies one training step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import attrs
import torch
from torch import nn
from tqdm.auto import tqdm

from promptgen.components.lazy import unwrap
from promptgen.components.options import SHARED
from promptgen.components.protocols import SteppedGenerator, protocol_members
from promptgen.toolkit.evaluate import instance_accuracy
from promptgen.toolkit.prompts import PromptAssembler
from promptgen.toolkit.epochs import Epochs
from promptgen.toolkit.lr_schedules import dassl_lr, warmup_cosine
from promptgen.toolkit.best_epoch import BestEpoch, report_epoch
from promptgen.values import FeatureSet, PromptLabel


def condition(features: torch.Tensor) -> torch.Tensor:
    """L2-normalised features rescaled to unit variance per dimension.

    A unit-norm feature of width D has entries of size ~1/sqrt(D) (0.04 at D = 512), drowned by the
    N(0, 1) noise it is concatenated with; a generator then ignores the image. Rescaling by sqrt(D)
    puts the condition on the noise's scale. The official SPG code feeds the unit-norm feature itself
    (spg_cgan.py:159,194,298): the CGAN's ``condition = "normalised"`` (its gpu preset) does the same.
    """
    return features * features.shape[1] ** 0.5


class PromptScaler(nn.Module):
    """Flattened prompts centred on the prompt labels' mean and divided by their overall std, and back.

    Generators that model prompts with unit-variance noise (VAE, diffusion) work in this space; the
    statistics are buffers, so they are saved and loaded with the generator's weights.
    """

    def __init__(self, size: int):
        super().__init__()
        self.register_buffer("center", torch.zeros(size))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("bound", torch.full((), float("inf")))  # the largest |normalised prompt label|

    @torch.no_grad()
    def fit(self, targets: torch.Tensor) -> None:
        flat = targets.reshape(len(targets), -1)
        self.center.copy_(flat.mean(dim=0))
        spread = (flat - self.center).std() if len(flat) > 1 else flat.std()
        self.scale.copy_(spread.clamp_min(1e-6))
        self.bound.copy_(self.normalize(targets).abs().max())

    def normalize(self, prompts: torch.Tensor) -> torch.Tensor:
        return (prompts.reshape(len(prompts), -1) - self.center) / self.scale

    def denormalize(self, flat: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return (flat * self.scale + self.center).view(len(flat), *shape)


def module_states(modules: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """One flat state dict for several named modules: '<name>.<key>' (what a Generator's state_dict returns)."""
    return {f"{name}.{key}": value for name, module in modules.items() for key, value in module.state_dict().items()}


def load_module_states(modules: dict[str, nn.Module], state: dict[str, torch.Tensor]) -> None:
    """The inverse of :func:`module_states`."""
    for name, module in modules.items():
        module.load_state_dict({key[len(name) + 1:]: value for key, value in state.items()
                                if key.startswith(name + ".")})


@attrs.frozen
class Trainer:
    """What a generator's training step needs, as its ``trainer(backbone, train, prompt_labels)`` returns it.

    ``step(index, rng)`` trains on the rows ``index`` of ``features`` (the training features on the
    generator's device) and returns its losses; ``rng`` is the loop's seeded generator (shuffling,
    noise, any other draws). The epoch loop sets the optimizers' learning rates and puts
    ``modules`` in train mode. The perf suite times ``step`` alone (stage II from cached features
    against features re-encoded every step).
    """

    step: Callable[[torch.Tensor, torch.Generator], dict]
    optimizers: Sequence[torch.optim.Optimizer]
    modules: Sequence[nn.Module]
    features: torch.Tensor
    min_batch: int = 2  # BatchNorm needs two samples


LR_SCHEDULES = SHARED["lr_schedule"].choices  # epoch: Dassl's, as the official code; step: promptgen's per-step cosine


def train_epochs(
    generator,
    backbone,
    train: FeatureSet,
    prompt_labels: Sequence[PromptLabel],
    val: FeatureSet | None,
    *,
    name: str,
    trainer: Trainer,
    epochs: int,
    batch_size: int,
    lr: float,
    warmup_epochs: int,
    seed: int,
    progress: bool,
    score: Callable[[], float] | None = None,
    watch_score: Callable[[FeatureSet], float] | None = None,
    lr_schedule: str = "step",
    warmup_lr: float = 1e-5,
    select_from: int = 0,
) -> dict:
    """Step through the epochs (promptgen.toolkit.epochs: one view of every image per epoch), score on ``val`` after
    each, keep the best epoch.

    lr_schedule: "epoch" is the official one (promptgen.toolkit.lr_schedules.dassl_lr: set once per epoch, a linear
    warm-up from ``warmup_lr``, cosine with T_max = ``epochs`` after it); "step" is promptgen's own
    per-step linear warm-up and cosine to zero. score: how an epoch is judged (higher is better), by
    default the accuracy of the generator's own prompts on ``val``; a method that uses the generated
    prompts otherwise (a negative path subtracted from a positive one) passes its own, and ``watch_score``, the
    same judgement of any FeatureSet, for the splits a sweep's model selection watches (promptgen.toolkit.best_epoch:
    every epoch is reported to an open watch; the default scores the generator's own prompts). Only epochs from
    ``select_from`` on are candidates (DPSPG's LATE); promptgen.toolkit.best_epoch's rule keeps the epoch.
    Returns {"best_epoch", "best_score", "history"} (history rows ``{"epoch", "val_accuracy", <the
    step's losses>}``: the Generator protocol's report, so a generator's ``fit`` can return it as it is);
    the generator is left in its best state.
    """
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"{name}: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {lr_schedule!r}")
    if not 0 <= select_from < epochs:
        raise ValueError(f"{name}: select_from={select_from} must be in [0, epochs={epochs})")
    step, optimizers, modules, min_batch = trainer.step, trainer.optimizers, trainer.modules, trainer.min_batch
    device = backbone.device
    assembler = PromptAssembler(backbone, prompt_labels[0].class_names, prompt_labels[0].n_ctx)
    rng = torch.Generator().manual_seed(seed)
    batches = Epochs(train, batch_size, rng)
    steps = batches.steps
    best = BestEpoch(select_from)
    history = []
    total, warmup = epochs * steps, warmup_epochs * steps
    # by step (with a rate), not by epoch: an epoch can take minutes on a loaded machine
    bar = tqdm(total=total, desc=name, unit="step", disable=not progress, leave=False)
    for epoch in range(epochs):
        for module in modules:
            module.train()
        losses = {}
        for index_of_step, index in enumerate(batches.next()):
            bar.update(1)
            if len(index) < min_batch:
                continue  # BatchNorm needs two samples
            rate = dassl_lr(epoch, epochs, warmup_epochs, lr, "linear", warmup_lr) if lr_schedule == "epoch" else \
                warmup_cosine(epoch * steps + index_of_step, total, warmup, lr)
            for optimizer in optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = rate
            losses = step(index.to(device), rng)
        if score is not None:
            result = score()
        else:
            result = instance_accuracy(backbone, assembler, generator, val, name) if val is not None and len(val) \
                else float("nan")
        history.append({"epoch": epoch, "val_accuracy": result, **losses})
        report_epoch(name, epoch, result, candidate=epoch >= select_from, features=watch_score or (
            lambda features: instance_accuracy(backbone, assembler, generator, features, name)))
        best.offer(epoch, result, generator.state_dict)
        bar.set_postfix(epoch=epoch, val=f"{result:.3f}", **{key: f"{value:.3f}" for key, value in losses.items()})
    bar.close()
    generator.load_state_dict(best.state)
    return {**best.report(), "history": history}


def fit_generator(generator, backbone, train: FeatureSet, prompt_labels: Sequence[PromptLabel], val: FeatureSet | None,
                  *, name: str) -> dict:
    """:func:`train_epochs` with the generator's own ``trainer(...)`` and :func:`loop_arguments`."""
    return train_epochs(generator, backbone, train, prompt_labels, val, name=name,
                        trainer=generator.trainer(backbone, train, prompt_labels), **loop_arguments(generator))


def loop_arguments(generator) -> dict:
    """The keywords of :func:`train_epochs` a generator that trains in this loop gives (the SteppedGenerator
    protocol, promptgen.components.protocols): its schedule block, ``seed``, ``lr_schedule`` and ``progress``, from
    its options object (a GeneratorScheduleOptions) when it has one, else from its own attributes."""
    source = _loop_source(generator)
    schedule = generator.schedule
    return {"epochs": schedule.epochs, "batch_size": schedule.batch_size, "lr": schedule.lr,
            "warmup_epochs": schedule.warmup_epochs, "seed": source.seed, "lr_schedule": source.lr_schedule,
            "progress": source.progress}


LOOP_VALUES = ("seed", "lr_schedule", "progress")  # what a generator keeps on its options object, if it has one


def _loop_source(generator):
    """Where a generator keeps ``seed``, ``lr_schedule`` and ``progress``: its options object, or itself (a
    generator that declares keyword options)."""
    options = getattr(generator, "options", None)
    return options if all(hasattr(options, name) for name in LOOP_VALUES) else generator


def trains_in_loop(generator) -> bool:
    """Whether ``generator`` (a built one) is a SteppedGenerator: one that this loop can train. A factory is
    asked with ``trains_in_loop(factory_class(...))`` or, before building, :func:`builds_stepped`."""
    methods, attributes = protocol_members(SteppedGenerator)
    source = _loop_source(generator)
    return all(callable(getattr(generator, name, None)) for name in methods) and \
        all(hasattr(source if name in LOOP_VALUES else generator, name) for name in attributes)


def builds_stepped(factory) -> bool:
    """Whether the generators ``factory`` (a class, functools.partial or lazy one) builds have a ``trainer()``."""
    return callable(getattr(unwrap(factory)[0], "trainer", None))
