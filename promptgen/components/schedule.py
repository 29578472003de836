"""The schedule block: the options every training prompt learner and generator shares, as one value.

A component's options object (promptgen.components.options) subclasses :class:`ScheduleOptions`, or one of
its extensions (:class:`SGDScheduleOptions`, CoOp's Dassl SGD; :class:`PromptLearnerOptions`, that and the run
values; :class:`GeneratorScheduleOptions`, a stage II generator's) and redeclares a field only where its default
differs; ``options.schedule`` is the :class:`Schedule` below.

A learner or generator that trains in epochs declares ``epochs`` and ``batch_size`` (and usually
``lr``, ``warmup_epochs``, ``weight_decay``) as options; their descriptions and ranges are declared
once (promptgen.components.options.SHARED). What the run engine, the dry run and the cost estimates
need of a component's training is its :class:`Schedule`, read with :meth:`Schedule.of` from the
options the resolver gives it, and a built component exposes the same as its ``schedule`` attribute
(the protocols' optional member; None: it trains nothing).
"""

from __future__ import annotations

from typing import Annotated, Any, Mapping

import attrs

from promptgen.components.options import searched
from promptgen.components.search import LogUniform


@attrs.frozen
class Schedule:
    epochs: int
    batch_size: int
    lr: float = 0.0
    warmup_epochs: int = 0
    weight_decay: float = 0.0

    REQUIRED = ("epochs", "batch_size")

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> Schedule | None:
        """The schedule a component's options give (its declared block), or None when it declares none."""
        if not all(name in options for name in cls.REQUIRED):
            return None
        return cls(**{field.name: options[field.name] for field in attrs.fields(cls) if field.name in options})


@attrs.frozen(kw_only=True)
class ScheduleOptions:
    """The options every training component shares (ranges and descriptions: options.SHARED). Subclass it as a
    component's ``Options``; redeclare a field only to change its default."""

    epochs: int = 8
    batch_size: int = 32
    lr: float = 2e-3
    warmup_epochs: int = 1
    weight_decay: float = 5e-4

    @property
    def schedule(self) -> Schedule:
        return Schedule(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, warmup_epochs=self.warmup_epochs,
                        weight_decay=self.weight_decay)


# The search space of the SGD-trained prompts (promptgen.components.search): around CoOp's official rate 2e-3.
PROMPT_LR = searched("lr", LogUniform(5e-4, 1e-2))


@attrs.frozen(kw_only=True)
class SGDScheduleOptions(ScheduleOptions):
    """CoOp's schedule as Dassl runs it (promptgen.toolkit.prompt_training): SGD with momentum, ``warmup_epochs``
    constant epochs at ``warmup_lr``, then a cosine per epoch."""

    lr: Annotated[float, PROMPT_LR] = 2e-3
    warmup_lr: float = 1e-5
    momentum: float = 0.9

    def train_arguments(self) -> dict:
        """The schedule's keywords of ``train_prompts`` (a loop over batches its caller draws), ``progress`` aside."""
        return {"epochs": self.epochs, "lr": self.lr, "warmup_epochs": self.warmup_epochs, "warmup_lr": self.warmup_lr,
                "momentum": self.momentum, "weight_decay": self.weight_decay}


@attrs.frozen(kw_only=True)
class PromptLearnerOptions(SGDScheduleOptions):
    """A CoOp-style prompt learner's options: the SGD schedule and the run values ``seed`` and ``progress``."""

    seed: int = 0
    progress: bool = True

    def fit_arguments(self) -> dict:
        """The keywords of ``fit_context`` (which draws the batches itself)."""
        return {**self.train_arguments(), "batch_size": self.batch_size, "seed": self.seed, "progress": self.progress}

    def config(self) -> dict:
        """What a prompt label's metadata records of the schedule that learned it."""
        return {**attrs.asdict(self.schedule), "warmup_lr": self.warmup_lr, "momentum": self.momentum,
                "seed": self.seed}


# The search space of the AdamW-trained generators (promptgen.components.search): around the official rate 2e-3,
# and DomainBed's weight decay.
GENERATOR_LR = searched("lr", LogUniform(1e-4, 1e-2))
GENERATOR_WEIGHT_DECAY = searched("weight_decay", LogUniform(1e-6, 1e-2))


@attrs.frozen(kw_only=True)
class GeneratorScheduleOptions(ScheduleOptions):
    """A stage II generator's schedule (promptgen.toolkit.generator_training), with SPG's stage II defaults (AdamW
    lr 2e-3, weight decay 1e-4, 70 epochs of batch 32, 4 warm-up epochs) and ``lr_schedule``: 'step' (per-step
    warm-up and cosine) or 'epoch' (Dassl's, the official code). A generator that redeclares ``lr`` or
    ``weight_decay`` keeps the search space by annotating it with GENERATOR_LR / GENERATOR_WEIGHT_DECAY."""

    epochs: int = 70
    lr: Annotated[float, GENERATOR_LR] = 2e-3
    warmup_epochs: int = 4
    weight_decay: Annotated[float, GENERATOR_WEIGHT_DECAY] = 1e-4
    lr_schedule: str = "step"
    seed: int = 0
    progress: bool = True


# The presets of a generator that stands in for SPG's stage II with no official values of its own: gpu is the
# defaults above on Dassl's per-epoch schedule; cpu is 12 epochs of batch 128 at lr 2e-4 (4x fewer steps for small
# networks on 2 cores).
GENERATOR_PRESETS = {"gpu": {"lr_schedule": "epoch"},
                     "cpu": {"epochs": 12, "batch_size": 128, "lr": 2e-4, "warmup_epochs": 1}}
