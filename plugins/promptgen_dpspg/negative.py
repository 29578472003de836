"""DPSPG's negative prompt label: a CoOp context initialised from "a photo without a", learned so that
"this image is *not* class k" holds for every class k the image is not.

Loss (DPSPG's stage I): binary cross-entropy with logits on the scaled cosine logits against the
complementary labels (1 for every wrong class, 0 for the true one), the wrong-class terms weighted by
pos_weight = C - 1. The true class is then the one the negative prompt matches least: the score an
epoch is selected on is the accuracy of argmin over the negative logits.

This learner learns the negative label alone (the ``dpspg`` method's ``stage1 = "separate"``, its cpu
preset); ``dpspg-coop`` (promptgen_dpspg.joint) learns it in one loop with the positive one, selected
with it on positive - negative, as the DPSPG code does (the gpu preset).
"""

from __future__ import annotations

from typing import Annotated

import attrs
import torch
import torch.nn.functional as F

from promptgen.toolkit import (
    accuracy, ConfigError, FeatureSet, fit_context, LogUniform, option, phrase_embedding, PromptLabel, Schedule,
    searched,
)

# the search space of a hyperparameter search (promptgen.components.search): around the official SGD rate 2e-3
LR = searched("lr", LogUniform(5e-4, 1e-2))

# The SGD schedule's own options (CoOp's, as Dassl runs it), shared with dpspg-coop (promptgen_dpspg.joint).


class NegativeCoOp:
    """A negative prompt label: BCE against complementary labels; the true class should score lowest."""

    name = "negative-coop"
    # gpu: DPSPG's stage I (configs/trainers/DPSPG_CoOp/b32_ep70.yaml with train.py's overrides): SGD lr 2e-3,
    # batch 32, 70 epochs, weight decay 1e-4, 4 constant warm-up epochs at 1e-5.
    presets = {
        "gpu": {"epochs": 70, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 4},
        "cpu": {"epochs": 8, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 1},
    }

    def __init__(self,
                 ctx_init: Annotated[str, option("phrase the negative context starts from, one vector per word "
                                                 "(DPSPG: 'a photo without a')")] = "a photo without a",
                 epochs: int = 70, batch_size: int = 32, lr: Annotated[float, LR] = 2e-3, warmup_epochs: int = 4,
                 warmup_lr: float = 1e-5,
                 momentum: float = 0.9,
                 weight_decay: float = 1e-4, seed: int = 0, progress: bool = True):
        if not ctx_init:
            raise ConfigError(f"negative-coop: ctx_init must be a phrase; got {ctx_init!r}")
        self.schedule = Schedule(epochs=epochs, batch_size=batch_size, lr=lr, warmup_epochs=warmup_epochs,
                                 weight_decay=weight_decay)
        self.ctx_init = ctx_init
        self.warmup_lr = warmup_lr
        self.momentum = momentum
        self.seed = seed
        self.progress = progress

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[1]
        complementary = 1.0 - F.one_hot(labels, classes).to(logits.dtype)
        weight = torch.tensor([max(1.0, classes - 1.0)], device=logits.device, dtype=logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, complementary, pos_weight=weight)

    @staticmethod
    def score(logits: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy(-logits, labels)

    def fit(self, backbone, class_names, train: FeatureSet, val: FeatureSet | None, domain: str) -> PromptLabel:
        result = fit_context(backbone, class_names, train, val, phrase_embedding(backbone, self.ctx_init).float(),
                             loss=self.loss, score=self.score, epochs=self.schedule.epochs,
                             batch_size=self.schedule.batch_size, lr=self.schedule.lr,
                             warmup_epochs=self.schedule.warmup_epochs, warmup_lr=self.warmup_lr,
                             momentum=self.momentum, weight_decay=self.schedule.weight_decay, seed=self.seed,
                             progress=self.progress, desc=f"{self.name} [{domain}]",
                             score_name="val_argmin_accuracy")
        return PromptLabel(ctx=result["ctx"], fingerprint=backbone.fingerprint, domain=domain,
                           class_names=tuple(class_names),
                           metadata={"learner": self.name, "negative": True,
                                     "val_argmin_accuracy": result["best_score"],
                                     "best_epoch": result["best_epoch"], "selected_on": result["selected_on"],
                                     "config": {"ctx_init": self.ctx_init, **attrs.asdict(self.schedule),
                                                "warmup_lr": self.warmup_lr, "momentum": self.momentum,
                                                "seed": self.seed, "n_ctx": int(result["ctx"].shape[0])},
                                     "history": result["history"]})
