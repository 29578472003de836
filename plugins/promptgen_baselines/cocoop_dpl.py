"""CoCoOp and DPL: the two baselines that condition the prompt on the image feature (on cached features)."""

from __future__ import annotations

from typing import Annotated

import attrs
import torch

from promptgen.toolkit import Epochs, logits as cosine_logits, option
from promptgen_baselines.conditional import ConditionalOptions, ConditionalPromptMethod, MetaNetPrompt, MLPPrompt, \
    PRESETS


class CoCoOp(ConditionalPromptMethod):
    """CoCoOp: CoOp's context plus a per-image shift from a meta-net (Linear E->E/16, ReLU, Linear ->D)."""

    name = "cocoop"
    rank = 30
    presets = PRESETS

    @attrs.frozen(kw_only=True)
    class Options(ConditionalOptions):
        reduction: Annotated[int, option("the meta-net's hidden width is the feature width divided by this (CoCoOp: "
                                         "16)", minimum=1)] = 16

    def __init__(self, options: Options = Options()):
        super().__init__(options)

    def build(self, backbone, ctx):
        return MetaNetPrompt(ctx, backbone.embed_dim, self.options.reduction)


class DPL(ConditionalPromptMethod):
    """DPL: an MLP maps image features to the prompt's n_ctx tokens, averaged over a batch of one domain.

    The prompt is a *domain* prompt: training batches hold one source domain each, and at test time
    the tokens are the mean over each block of ``test_batch`` target images (the official test batch
    is 100), so a prediction depends on the other images of its block, as in the reference code.
    """

    name = "dpl"
    rank = 40
    presets = PRESETS

    @attrs.frozen(kw_only=True)
    class Options(ConditionalOptions):
        width: Annotated[int, option("width of the MLP's hidden layers", minimum=1)] = 512
        depth: Annotated[int, option("linear layers of the MLP (depth - 1 hidden ones)", minimum=1)] = 3
        dropout: Annotated[float, option("dropout after each hidden layer of the MLP", minimum=0, maximum=1)] = 0.1
        test_batch: Annotated[int, option("target images per test block, which share one prompt (the official test "
                                          "batch: 100)", minimum=1)] = 100

    def __init__(self, options: Options = Options()):
        super().__init__(options)

    def build(self, backbone, ctx):
        # ctx_init only fixes n_ctx (one per word): DPL's tokens all come from the MLP.
        o = self.options
        return MLPPrompt(backbone.embed_dim, ctx.shape[0], backbone.ctx_dim, o.width, o.depth, o.dropout)

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
        for start in range(0, len(features), self.options.test_batch):
            block = features[start:start + self.options.test_batch].to(backbone.device)
            text = assembler.text_features(backbone, self.net.sample(block).mean(dim=0))  # one prompt per block
            out.append(cosine_logits(block, text, backbone.logit_scale).cpu())
        return torch.cat(out) if out else torch.empty(0, len(assembler.class_names))
