"""Methods whose prompt is a function of the image feature, trained end to end through the text encoder.

CoCoOp and DPL are both a small network from the (cached, frozen) image feature to a context
[n_ctx, D] for that image, trained by cross-entropy on the cosine logits of the C class prompts
built around it: B images x C classes prompts are encoded with gradients per step. At test time the
network gives every image its prompt and promptgen's instance-specific inference scores it (the
same path as SPG's generated prompts). They differ only in the network and in what it sees.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import attrs
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from promptgen.toolkit import (
    accuracy, ConfigError, context_length, Epochs, instance_logits, logits, option, phrase_embedding,
    PromptAssembler, read_json, SGDScheduleOptions, train_prompts, write_json,
)

RANDOM_N_CTX = 4  # context vectors without ctx_init (the SPG baselines' 4, randomly initialised)

# The SPG baselines' schedule (configs/trainers/BASELINE/b32_ep50.yaml, train_baseline.py): SGD, lr 2e-3, momentum
# 0.9, weight decay 1e-4, batch 32, 50 epochs, one constant warm-up epoch at 1e-5; cpu: 2 epochs, no warm-up.
PRESETS = {"gpu": {"epochs": 50, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 1},
           "cpu": {"epochs": 2, "batch_size": 32, "lr": 2e-3, "weight_decay": 1e-4, "warmup_epochs": 0}}


@attrs.frozen(kw_only=True)
class BaselineOptions(SGDScheduleOptions):
    """The SPG baselines' schedule (PRESETS' gpu values), every baseline's options object's base."""

    epochs: int = 50
    weight_decay: float = 1e-4


@attrs.frozen(kw_only=True)
class ConditionalOptions(BaselineOptions):
    """The options CoCoOp and DPL share (promptgen_baselines.cocoop_dpl)."""

    ctx_init: Annotated[str | None, option("phrase the context starts from, one vector per word; empty or None: "
                                           "n_ctx random vectors")] = "a photo of a"
    n_ctx: Annotated[int | None, option("context vectors: ctx_init's word count when it is set, else 4 random ones "
                                        "(the SPG baselines') unless given", minimum=1)] = None


class PromptNet(torch.nn.Module):
    """Base of the per-image prompt networks: ``sample(features [N, E]) -> contexts [N, n_ctx, D]``."""

    def sample(self, features: torch.Tensor) -> torch.Tensor:
        return self(F.normalize(features.float(), dim=-1))


class MetaNetPrompt(PromptNet):
    """CoCoOp: learned context vectors, shifted per image by a meta-net's output (one shift for all tokens)."""

    def __init__(self, ctx: torch.Tensor, feature_dim: int, reduction: int = 16):
        super().__init__()
        self.ctx = torch.nn.Parameter(ctx.clone())
        hidden = max(1, feature_dim // reduction)
        self.meta_net = torch.nn.Sequential(torch.nn.Linear(feature_dim, hidden), torch.nn.ReLU(inplace=True),
                                            torch.nn.Linear(hidden, ctx.shape[-1]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.ctx[None] + self.meta_net(features)[:, None, :]


class MLPPrompt(PromptNet):
    """DPL: an MLP from the image feature to all n_ctx context tokens of the (domain) prompt."""

    def __init__(self, feature_dim: int, n_ctx: int, ctx_dim: int, width: int = 512, depth: int = 3,
                 dropout: float = 0.1):
        super().__init__()
        layers, size = [], feature_dim
        for _ in range(depth - 1):
            layers += [torch.nn.Linear(size, width), torch.nn.Dropout(dropout), torch.nn.ReLU()]
            size = width
        layers.append(torch.nn.Linear(size, n_ctx * ctx_dim))
        self.mlp = torch.nn.Sequential(*layers)
        self.shape = (n_ctx, ctx_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features).view(len(features), *self.shape)


class ConditionalPromptMethod:
    """A per-image prompt network trained on the source domains pooled; subclasses build the network.

    Schedule (CoOp's, as the SPG baselines use it): SGD with momentum, a constant warm-up at
    ``warmup_lr`` for ``warmup_epochs``, then cosine decay stepped per epoch (as Dassl does); the epoch with the best source
    val accuracy is kept (promptgen.toolkit.best_epoch: of two equal, the earlier, as the official code).
    """

    inputs = "features"
    file = "prompt_net"

    name = "conditional"  # each subclass names itself

    def __init__(self, options: ConditionalOptions):
        n_ctx = context_length(options.ctx_init, options.n_ctx, RANDOM_N_CTX, self.name)
        if n_ctx < 1:  # ctx_init set but without a word
            raise ConfigError(f"{self.name}: n_ctx must be >= 1; got {n_ctx} (ctx_init {options.ctx_init!r})")
        self.options = options
        self.net: PromptNet | None = None
        self.n_ctx = n_ctx

    @classmethod
    def effective_options(cls, values: dict) -> dict:
        """``n_ctx`` as it runs: ctx_init's word count when it is set (promptgen.toolkit.prompts.context_length)."""
        return {**values, "n_ctx": context_length(values["ctx_init"], values["n_ctx"], RANDOM_N_CTX, cls.name)}

    def components(self):
        return ()

    # --- what subclasses say -----------------------------------------------------------------------

    def build(self, backbone, ctx: torch.Tensor) -> PromptNet:
        """The network for ``backbone``, its context initialised to ``ctx`` [n_ctx, D]."""
        raise NotImplementedError

    def contexts(self, features: torch.Tensor) -> torch.Tensor:
        """The contexts [B, n_ctx, D] a training batch of features [B, E] is scored with."""
        return self.net.sample(features)

    def batches(self, train, batch_size: int, rng: torch.Generator):
        """``(next_epoch, steps)``: a callable giving each epoch's batches (index tensors) and their number (default:
        the sources pooled, one view of each image per epoch: promptgen.toolkit.epochs)."""
        epochs = Epochs(train, batch_size, rng)
        return epochs.next, epochs.steps

    # --- training ------------------------------------------------------------------------------------

    def _initial_context(self, backbone, seed: int) -> torch.Tensor:
        if self.options.ctx_init:
            return phrase_embedding(backbone, self.options.ctx_init, self.name).float()  # n_ctx: one per word
        return 0.02 * torch.randn(self.n_ctx, backbone.ctx_dim, generator=torch.Generator().manual_seed(seed))

    def fit(self, run) -> dict:
        backbone = run.backbone
        torch.manual_seed(run.seed)  # the network's initial weights
        ctx = self._initial_context(backbone, run.seed)
        self.n_ctx = ctx.shape[0]
        self.net = self.build(backbone, ctx).to(backbone.device)
        train, val = run.features("train"), run.features("val")
        assembler = PromptAssembler(backbone, run.classes, self.n_ctx)
        next_epoch, steps = self.batches(train, self.options.batch_size, torch.Generator().manual_seed(run.seed))

        def loss(index):
            features = train.features[index].to(backbone.device)
            text = assembler.text_features(backbone, self.contexts(features))  # [B, C, E]
            return F.cross_entropy(logits(features, text, backbone.logit_scale), train.labels[index].to(backbone.device))

        def score():
            return accuracy(self._logits(backbone, assembler, val.features), val.labels) if len(val) else float("nan")

        with run.timed("train"):
            result = train_prompts(self.net, batches=next_epoch, steps=steps, loss=loss, score=score,
                                   score_features=lambda f: accuracy(self._logits(backbone, assembler, f.features),
                                                                     f.labels),
                                   **self.options.train_arguments(), progress=run.progress, desc=self.name)
        return {"best_epoch": result["best_epoch"], "best_score": result["best_score"], "history": result["history"]}

    # --- prediction ----------------------------------------------------------------------------------

    @torch.no_grad()
    def _logits(self, backbone, assembler, features: torch.Tensor) -> torch.Tensor:
        return instance_logits(backbone, assembler, self.net, features, name=self.name)

    def logits(self, run, split: str) -> torch.Tensor:
        assembler = PromptAssembler(run.backbone, run.classes, self.n_ctx)
        return self._logits(run.backbone, assembler, run.features(split).features)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        save_file({key: value.contiguous().cpu() for key, value in self.net.state_dict().items()},
                  directory / f"{self.file}.safetensors")
        write_json(directory / f"{self.file}.json", {"method": self.name, **attrs.asdict(self.options),
                                                     "n_ctx": self.n_ctx})

    def load(self, directory: Path, run) -> None:
        directory = Path(directory)
        saved = read_json(directory / f"{self.file}.json")
        self.n_ctx = saved["n_ctx"]
        ctx = torch.zeros(self.n_ctx, run.backbone.ctx_dim)
        self.net = self.build(run.backbone, ctx)
        self.net.load_state_dict(load_file(directory / f"{self.file}.safetensors"))
        self.net.to(run.backbone.device).eval()
