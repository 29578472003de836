"""CoOp (Zhou et al., IJCV 2022): learned context vectors, cross-entropy on cosine logits, frozen CLIP.

Trained from cached image features: each step encodes the C class prompts (truncated at EOT) with
gradients to the context only. Schedule as the official CoOp config that SPG uses: SGD, a constant
warm-up epoch at 1e-5, then cosine decay per epoch. The epoch with the best validation accuracy is kept.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from promptgen.errors import ConfigError
from promptgen.evaluate import accuracy, prompt_logits
from promptgen.prompts import PromptAssembler, phrase_embedding
from promptgen.schedules import warmup_cosine
from promptgen.values import FeatureSet, PromptLabel


class CoOpPrompt:
    """CoOp: n_ctx context vectors learned by cross-entropy on cosine logits, initialised from "a photo of a"."""

    # gpu: the official CoOp configuration SPG's stage I uses (SGD, lr 2e-3, 50 epochs, batch 32).
    presets = {
        "gpu": {"epochs": 50, "batch_size": 32, "lr": 2e-3},
        "cpu": {"epochs": 8, "batch_size": 32, "lr": 2e-3},
    }

    def __init__(
        self,
        ctx_init: str | None = "a photo of a",
        n_ctx: int = 16,
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
        if epochs < 1 or batch_size < 1 or n_ctx < 1:
            raise ConfigError(f"coop: epochs, batch_size and n_ctx must be >= 1; got {epochs}, {batch_size}, {n_ctx}")
        self.options = dict(ctx_init=ctx_init, n_ctx=n_ctx, epochs=epochs, batch_size=batch_size, lr=lr,
                            warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, momentum=momentum,
                            weight_decay=weight_decay, seed=seed)
        self.progress = progress

    def _initial_context(self, backbone) -> torch.Tensor:
        o = self.options
        if o["ctx_init"]:
            return phrase_embedding(backbone, o["ctx_init"]).float()  # n_ctx = the phrase's token count
        generator = torch.Generator().manual_seed(o["seed"])
        return 0.02 * torch.randn(o["n_ctx"], backbone.ctx_dim, generator=generator)

    def fit(self, backbone, class_names, train: FeatureSet, val: FeatureSet | None, domain: str) -> PromptLabel:
        o = self.options
        ctx = torch.nn.Parameter(self._initial_context(backbone).to(backbone.device))
        assembler = PromptAssembler(backbone, class_names, ctx.shape[0])
        optimizer = torch.optim.SGD([ctx], lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
        shuffle = torch.Generator().manual_seed(o["seed"])
        best = (-1.0, ctx.detach().clone(), -1)
        bar = tqdm(range(o["epochs"]), desc=f"coop [{domain}]", unit="epoch", disable=not self.progress, leave=False)
        for epoch in bar:
            for group in optimizer.param_groups:
                group["lr"] = warmup_cosine(epoch, o["epochs"], o["warmup_epochs"], o["lr"], o["warmup_lr"])
            order = torch.randperm(len(train), generator=shuffle)
            for start in range(0, len(train), o["batch_size"]):
                index = order[start : start + o["batch_size"]]
                features = train.features[index].to(backbone.device)
                text = assembler.text_features(backbone, ctx)
                loss = F.cross_entropy(backbone.logit_scale * features @ text.T, train.labels[index].to(backbone.device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            selection = val if val is not None and len(val) else train
            score = accuracy(prompt_logits(backbone, assembler, ctx.detach(), selection.features), selection.labels)
            if score > best[0]:
                best = (score, ctx.detach().clone(), epoch)
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{score:.3f}")
        return PromptLabel(
            ctx=best[1].cpu(),
            fingerprint=backbone.fingerprint,
            domain=domain,
            class_names=tuple(class_names),
            metadata={"learner": "coop", "val_accuracy": best[0], "best_epoch": best[2],
                      "selected_on": "val" if val is not None and len(val) else "train", "config": o},
        )
