"""CoCoOp and DPL: the two baselines that condition the prompt on the image feature (on cached features)."""

from __future__ import annotations

from typing import Annotated

import torch

from promptgen.toolkit import Epochs, logits as cosine_logits, LogUniform, option, searched
from promptgen_baselines.conditional import CTX_INIT, N_CTX, ConditionalPromptMethod, \
    MetaNetPrompt, MLPPrompt

# the search space of a hyperparameter search (promptgen.components.search): around the official SGD rate 2e-3
LR = searched("lr", LogUniform(5e-4, 1e-2))

# The SPG baselines' schedule (configs/trainers/BASELINE/b32_ep50.yaml, train_baseline.py): SGD,
# lr 2e-3, momentum 0.9, weight decay 1e-4, batch 32, 50 epochs, one constant warm-up epoch at 1e-5.
OFFICIAL = {"epochs": 50, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 1}
CPU = {"epochs": 2, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 0}


class CoCoOp(ConditionalPromptMethod):
    """CoCoOp: CoOp's context plus a per-image shift from a meta-net (Linear E->E/16, ReLU, Linear ->D)."""

    name = "cocoop"
    rank = 30
    presets = {"gpu": OFFICIAL, "cpu": CPU}

    def __init__(self, ctx_init: Annotated[str | None, CTX_INIT] = "a photo of a",
                 n_ctx: Annotated[int | None, N_CTX] = None,
                 reduction: Annotated[int, option("the meta-net's hidden width is the feature width divided by this "
                                                  "(CoCoOp: 16)", minimum=1)] = 16,
                 epochs: int = 50, batch_size: int = 32, lr: Annotated[float, LR] = 2e-3, warmup_epochs: int = 1,
                 warmup_lr: float = 1e-5, momentum: float = 0.9,
                 weight_decay: float = 1e-4):
        super().__init__(ctx_init=ctx_init, n_ctx=n_ctx, epochs=epochs, batch_size=batch_size, lr=lr,
                         warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, momentum=momentum,
                         weight_decay=weight_decay, name="cocoop")
        self.reduction = reduction

    def build(self, backbone, ctx):
        return MetaNetPrompt(ctx, backbone.embed_dim, self.reduction)


class DPL(ConditionalPromptMethod):
    """DPL: an MLP maps image features to the prompt's n_ctx tokens, averaged over a batch of one domain.

    The prompt is a *domain* prompt: training batches hold one source domain each, and at test time
    the tokens are the mean over each block of ``test_batch`` target images (the official test batch
    is 100), so a prediction depends on the other images of its block, as in the reference code.
    """

    name = "dpl"
    rank = 40
    presets = {"gpu": OFFICIAL, "cpu": CPU}

    def __init__(self, ctx_init: Annotated[str | None, CTX_INIT] = "a photo of a",
                 n_ctx: Annotated[int | None, N_CTX] = None,
                 width: Annotated[int, option("width of the MLP's hidden layers", minimum=1)] = 512,
                 depth: Annotated[int, option("linear layers of the MLP (depth - 1 hidden ones)", minimum=1)] = 3,
                 dropout: Annotated[float, option("dropout after each hidden layer of the MLP", minimum=0,
                                                  maximum=1)] = 0.1,
                 test_batch: Annotated[int, option("target images per test block, which share one prompt (the "
                                                   "official test batch: 100)", minimum=1)] = 100,
                 epochs: int = 50, batch_size: int = 32, lr: Annotated[float, LR] = 2e-3, warmup_epochs: int = 1,
                 warmup_lr: float = 1e-5, momentum: float = 0.9,
                 weight_decay: float = 1e-4):
        super().__init__(ctx_init=ctx_init, n_ctx=n_ctx, epochs=epochs, batch_size=batch_size, lr=lr,
                         warmup_epochs=warmup_epochs, warmup_lr=warmup_lr, momentum=momentum,
                         weight_decay=weight_decay, name="dpl")
        self.width, self.depth, self.dropout, self.test_batch = width, depth, dropout, test_batch

    def build(self, backbone, ctx):
        # ctx_init only fixes n_ctx (one per word): DPL's tokens all come from the MLP.
        return MLPPrompt(backbone.embed_dim, ctx.shape[0], backbone.ctx_dim, self.width, self.depth, self.dropout)

    def batches(self, train, batch_size: int, rng: torch.Generator):
        """Batches of one domain each (one view of each image per epoch), the domains' batches shuffled together."""
        domains = [torch.nonzero(train.domain_ids == d).flatten() for d in torch.unique(train.domain_ids)]
        per_domain = [(rows, Epochs(train.select(rows), batch_size, rng)) for rows in domains]

        def next_epoch():
            out = [rows[index] for rows, epochs in per_domain for index in epochs.next()]
            return [out[i] for i in torch.randperm(len(out), generator=rng)]
        return next_epoch, sum(epochs.steps for _, epochs in per_domain)

    def contexts(self, features):
        return self.net.sample(features).mean(dim=0, keepdim=True).expand(len(features), -1, -1)

    @torch.no_grad()
    def _logits(self, backbone, assembler, features):
        out = []
        for start in range(0, len(features), self.test_batch):
            block = features[start:start + self.test_batch].to(backbone.device)
            text = assembler.text_features(backbone, self.net.sample(block).mean(dim=0))  # one prompt per block
            out.append(cosine_logits(block, text, backbone.logit_scale).cpu())
        return torch.cat(out) if out else torch.empty(0, len(assembler.class_names))
