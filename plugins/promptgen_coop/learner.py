"""CoOp (Zhou et al., IJCV 2022): learned context vectors, cross-entropy on cosine logits, frozen CLIP.

Trained from cached image features: each step encodes the C class prompts (truncated at EOT) with
gradients to the context only. Schedule as the official CoOp config that SPG uses (the loop is
promptgen.context_fitting's): SGD, a constant warm-up epoch at 1e-5, then cosine decay per epoch; the
epoch with the best validation accuracy is kept (ties: the later epoch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from promptgen.errors import ConfigError
from promptgen.context_fitting import fit_context
from promptgen.evaluate import accuracy
from promptgen.prompts import context_length, phrase_embedding
from promptgen.values import FeatureSet, PromptLabel


RANDOM_N_CTX = 16  # context vectors without ctx_init (CoOp's 16, randomly initialised)


class CoOpPrompt:
    """CoOp: n_ctx context vectors learned by cross-entropy on cosine logits, initialised from "a photo of a".

    With ``ctx_init`` (the default "a photo of a") the context starts as the phrase's token embeddings, one
    per word: ``n_ctx`` is its word count (4) and may be left unset, and an ``n_ctx`` that differs is
    refused before the run. With ``ctx_init=""`` (or None): ``n_ctx`` (default 16) random vectors.
    """

    name = "coop"

    # gpu: the official CoOp configuration SPG's stage I uses (SGD, lr 2e-3, 50 epochs, batch 32).
    presets = {
        "gpu": {"epochs": 50, "batch_size": 32, "lr": 2e-3},
        "cpu": {"epochs": 8, "batch_size": 32, "lr": 2e-3},
    }

    def __init__(
        self,
        ctx_init: str | None = "a photo of a",
        n_ctx: int | None = None,
        epochs: int = 50,
        batch_size: int = 32,
        lr: float = 2e-3,
        warmup_epochs: int = 1,
        warmup_lr: float = 1e-5,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        seed: int = 0,
        progress: bool = True,
    ):
        n_ctx = context_length(ctx_init, n_ctx, RANDOM_N_CTX, self.name)
        if epochs < 1 or batch_size < 1 or n_ctx < 1:
            raise ConfigError(f"coop: epochs, batch_size and n_ctx must be >= 1; got {epochs}, {batch_size}, {n_ctx}")
        self.options = dict(ctx_init=ctx_init, n_ctx=n_ctx, epochs=epochs, batch_size=batch_size, lr=lr,
                            warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, momentum=momentum,
                            weight_decay=weight_decay, seed=seed)
        self.progress = progress

    @classmethod
    def effective_options(cls, values: dict) -> dict:
        """The options as a run uses them: ``n_ctx`` is ctx_init's word count when it is set
        (promptgen.prompts.context_length), so a dry run shows the 4 of "a photo of a"."""
        return {**values, "n_ctx": context_length(values["ctx_init"], values["n_ctx"], RANDOM_N_CTX, cls.name)}

    def _initial_context(self, backbone) -> torch.Tensor:
        o = self.options
        if o["ctx_init"]:
            return phrase_embedding(backbone, o["ctx_init"], self.name).float()  # n_ctx vectors: one per word
        generator = torch.Generator().manual_seed(o["seed"])
        return 0.02 * torch.randn(o["n_ctx"], backbone.ctx_dim, generator=generator)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def score(self, logits: torch.Tensor, labels: torch.Tensor) -> float:
        return accuracy(logits, labels)

    def fit(self, backbone, class_names, train: FeatureSet, val: FeatureSet | None, domain: str) -> PromptLabel:
        o = self.options
        result = fit_context(backbone, class_names, train, val, self._initial_context(backbone), loss=self.loss,
                             score=self.score, epochs=o["epochs"], batch_size=o["batch_size"], lr=o["lr"],
                             warmup_epochs=o["warmup_epochs"], warmup_lr=o["warmup_lr"], momentum=o["momentum"],
                             weight_decay=o["weight_decay"], seed=o["seed"], progress=self.progress,
                             desc=f"{self.name} [{domain}]")
        n_ctx = result["ctx"].shape[0]  # == self.options["n_ctx"] (phrase_embedding checks it)
        return PromptLabel(
            ctx=result["ctx"],
            fingerprint=backbone.fingerprint,
            domain=domain,
            class_names=tuple(class_names),
            metadata={"learner": self.name, "val_accuracy": result["score"], "best_epoch": result["best_epoch"],
                      "selected_on": result["selected_on"], "steps": result["steps"], "config": {**o, "n_ctx": n_ctx},
                      "history": result["history"]},
        )
