"""CoOp (Zhou et al., IJCV 2022): learned context vectors, cross-entropy on cosine logits, frozen CLIP.

Trained from cached image features: each step encodes the C class prompts (truncated at EOT) with
gradients to the context only. Schedule as the official CoOp config (the loop is
promptgen.toolkit.prompt_training's): SGD, a constant warm-up epoch at 1e-5, then Dassl's cosine per epoch;
the epoch with the best validation accuracy is kept (promptgen.toolkit.best_epoch: of two equal, the earlier).

``spg-coop`` is the same learner as SPG's stage I runs it: the released scripts' train.py forces
weight decay 1e-4 and 4 warm-up epochs over the CoOp config (train.py:77-81,269-270), while the CoOp
baseline (train_baseline.py, b32_ep50.yaml) keeps 5e-4 and 1; both keep the earlier of two equal
epochs (spg_coop.py:206-208, trainers_baseline/basedg.py:235).
"""

from __future__ import annotations

from typing import Annotated

import attrs
import torch
import torch.nn.functional as F

from promptgen.toolkit import (
    accuracy, ConfigError, context_length, FeatureSet, fit_context, option, phrase_embedding, PromptLabel,
    PromptLearnerOptions,
)

RANDOM_N_CTX = 16  # context vectors without ctx_init (CoOp's 16, randomly initialised)


class CoOpPrompt:
    """CoOp: n_ctx context vectors learned by cross-entropy on cosine logits, initialised from "a photo of a".

    With ``ctx_init`` (the default "a photo of a") the context starts as the phrase's token embeddings, one
    per word: ``n_ctx`` is its word count (4) and may be left unset, and an ``n_ctx`` that differs is
    refused before the run. With ``ctx_init=""`` (or None): ``n_ctx`` (default 16) random vectors.
    """

    name = "coop"

    # gpu: the official CoOp baseline's configuration (b32_ep50.yaml: SGD, lr 2e-3, 50 epochs, batch 32, weight
    # decay 5e-4, 1 constant warm-up epoch at 1e-5), the earlier of two equal epochs kept (basedg.py:235).
    # cpu: the same schedule in 8 epochs.
    presets = {
        "gpu": {"epochs": 50, "batch_size": 32, "lr": 2e-3},
        "cpu": {"epochs": 8, "batch_size": 32, "lr": 2e-3},
    }

    @attrs.frozen(kw_only=True)
    class Options(PromptLearnerOptions):
        ctx_init: Annotated[str | None, option("phrase the context starts from, one vector per word (CoOp: 'a photo "
                                               "of a'); empty or None: n_ctx random vectors")] = "a photo of a"
        n_ctx: Annotated[int | None, option("context vectors: ctx_init's word count when it is set, else 16 random "
                                            "ones (CoOp's) unless given", minimum=1)] = None
        epochs: int = 50

    def __init__(self, options: Options = Options()):
        self.options = options
        self.schedule = options.schedule
        self.n_ctx = context_length(options.ctx_init, options.n_ctx, RANDOM_N_CTX, self.name)
        if self.n_ctx < 1:  # ctx_init set but without a word
            raise ConfigError(f"{self.name}: n_ctx must be >= 1; got {self.n_ctx} (ctx_init {options.ctx_init!r})")

    def config(self) -> dict:
        """What the label's metadata records of how it was learned."""
        return {"ctx_init": self.options.ctx_init, **self.options.config()}

    @classmethod
    def effective_options(cls, values: dict) -> dict:
        """The options as a run uses them: ``n_ctx`` is ctx_init's word count when it is set
        (promptgen.toolkit.prompts.context_length), so a dry run shows the 4 of "a photo of a"."""
        return {**values, "n_ctx": context_length(values["ctx_init"], values["n_ctx"], RANDOM_N_CTX, cls.name)}

    def _initial_context(self, backbone) -> torch.Tensor:
        if self.options.ctx_init:  # n_ctx vectors: one per word
            return phrase_embedding(backbone, self.options.ctx_init, self.name).float()
        generator = torch.Generator().manual_seed(self.options.seed)
        return 0.02 * torch.randn(self.n_ctx, backbone.ctx_dim, generator=generator)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy(logits, labels)

    def fit(self, backbone, class_names, train: FeatureSet, val: FeatureSet | None, domain: str) -> PromptLabel:
        result = fit_context(backbone, class_names, train, val, self._initial_context(backbone), loss=self.loss,
                             score=self.score, **self.options.fit_arguments(), desc=f"{self.name} [{domain}]")
        n_ctx = result["ctx"].shape[0]  # == self.n_ctx (phrase_embedding checks it)
        return PromptLabel(
            ctx=result["ctx"],
            fingerprint=backbone.fingerprint,
            domain=domain,
            class_names=tuple(class_names),
            metadata={"learner": self.name, "val_accuracy": result["best_score"], "best_epoch": result["best_epoch"],
                      "selected_on": result["selected_on"], "steps": result["steps"],
                      "config": {**self.config(), "n_ctx": n_ctx}, "history": result["history"]},
        )


class SPGStageOne(CoOpPrompt):
    """CoOp as SPG's stage I runs it (the released scripts' train.py overrides): weight decay 1e-4 and 4 constant
    warm-up epochs in the gpu preset, the earlier of two equal epochs kept."""

    name = "spg-coop"
    settings_from = ("coop",)  # `--set coop.epochs=2` reaches SPG's stage I as it reaches CoOp; spg-coop.* only it
    presets = {
        "gpu": {"epochs": 50, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 4},
        "cpu": CoOpPrompt.presets["cpu"],
    }
