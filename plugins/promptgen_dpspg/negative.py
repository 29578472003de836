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
    accuracy, ConfigError, FeatureSet, fit_context, option, phrase_embedding, PromptLabel, PromptLearnerOptions,
)

# gpu: DPSPG's stage I (configs/trainers/DPSPG_CoOp/b32_ep70.yaml with train.py's overrides): SGD lr 2e-3, batch 32,
# 70 epochs, weight decay 1e-4, 4 constant warm-up epochs at 1e-5. cpu: the same in 8 epochs with 1 warm-up epoch.
# Both stage I learners (this one and dpspg-coop, promptgen_dpspg.joint) run it.
STAGE_ONE_PRESETS = {
    "gpu": {"epochs": 70, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 4},
    "cpu": {"epochs": 8, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 1},
}


@attrs.frozen(kw_only=True)
class StageOneOptions(PromptLearnerOptions):
    """DPSPG's stage I schedule, the defaults of both its learners (the gpu preset's values)."""

    epochs: int = 70
    warmup_epochs: int = 4
    weight_decay: float = 1e-4


class NegativeCoOp:
    """A negative prompt label: BCE against complementary labels; the true class should score lowest."""

    name = "negative-coop"
    presets = STAGE_ONE_PRESETS

    @attrs.frozen(kw_only=True)
    class Options(StageOneOptions):
        ctx_init: Annotated[str, option("phrase the negative context starts from, one vector per word "
                                        "(DPSPG: 'a photo without a')")] = "a photo without a"

    def __init__(self, options: Options = Options()):
        if not options.ctx_init:
            raise ConfigError(f"negative-coop: ctx_init must be a phrase; got {options.ctx_init!r}")
        self.options = options
        self.schedule = options.schedule

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
        initial = phrase_embedding(backbone, self.options.ctx_init).float()
        result = fit_context(backbone, class_names, train, val, initial, loss=self.loss, score=self.score,
                             **self.options.fit_arguments(), desc=f"{self.name} [{domain}]",
                             score_name="val_argmin_accuracy")
        return PromptLabel(ctx=result["ctx"], fingerprint=backbone.fingerprint, domain=domain,
                           class_names=tuple(class_names),
                           metadata={"learner": self.name, "negative": True,
                                     "val_argmin_accuracy": result["best_score"],
                                     "best_epoch": result["best_epoch"], "selected_on": result["selected_on"],
                                     "config": {"ctx_init": self.options.ctx_init, **self.options.config(),
                                                "n_ctx": int(result["ctx"].shape[0])},
                                     "history": result["history"]})
