"""DPSPG's stage II generator: a transformer encoder that regresses the domain's prompt label from the image
feature (mean squared error; no noise, no discriminator).

As in the DPSPG code: the L2-normalised image feature is a sequence of length one for a
``layers``-layer ``nn.TransformerEncoder`` (d_model = the feature width, ``heads`` heads, PyTorch's
defaults otherwise: feed-forward 2048, dropout 0.1, post-norm), then a linear layer to n_ctx x D.
With one token, self-attention mixes nothing: the encoder is a deep residual MLP with layer norms.
"""

from __future__ import annotations

from typing import Annotated

import attrs
import torch
from torch import nn

from promptgen.toolkit import (
    ConfigError, FeatureSet, fit_generator, GeneratorScheduleOptions, load_module_states, module_states, option,
    Trainer,
)


class TransformerGenerator:
    """A transformer encoder from image feature to prompt, trained by MSE to the domain's prompt label."""

    # gpu: DPSPG's stage II (configs/trainers/DPSPG_TRANSFORMER/pnspg_transformer.yaml + the trainer): AdamW
    # (dpspg_transformer.py:84-85) lr 2e-3, weight decay 1e-4 (train.py:146-148,225-226), batch 32, 50 epochs,
    # Dassl's per-epoch schedule (update_lr once per epoch: dpspg_transformer.py:164-165): a *linear* warm-up
    # over 4 epochs from WARMUP_MIN_LR = 1e-5 (yaml:20-21; Dassl defaults.py:182, lr_scheduler.py:57-80; the
    # yaml's WARMUP_CONS_LR is for a constant warm-up and unused), then cosine (yaml:19).
    # cpu: promptgen's per-step warm-up and cosine to zero, in 6 epochs of batch 128.
    presets = {"gpu": {"epochs": 50, "batch_size": 32, "lr": 2e-3, "warmup_epochs": 4, "lr_schedule": "epoch"},
               "cpu": {"epochs": 6, "batch_size": 128, "lr": 2e-3, "warmup_epochs": 1}}

    @attrs.frozen(kw_only=True)
    class Options(GeneratorScheduleOptions):
        layers: Annotated[int, option("transformer encoder layers (DPSPG: 4)", minimum=1)] = 4
        heads: Annotated[int, option("attention heads; must divide the image feature width (DPSPG: 8)",
                                     minimum=1)] = 8
        feedforward: Annotated[int, option("width of each layer's feed-forward block (PyTorch's default 2048, as "
                                           "DPSPG)", minimum=1)] = 2048
        dropout: Annotated[float, option("dropout in each encoder layer (PyTorch's default 0.1, as DPSPG)",
                                         minimum=0, maximum=1)] = 0.1
        epochs: int = 50

    def __init__(self, feature_dim: int, n_ctx: int, ctx_dim: int, options: Options = Options()):
        if feature_dim % options.heads:
            raise ConfigError(f"transformer: heads must divide the feature width {feature_dim}; got "
                              f"heads={options.heads}")
        self.options = options
        self.schedule = options.schedule
        self.shape = (n_ctx, ctx_dim)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            layer = nn.TransformerEncoderLayer(feature_dim, options.heads, options.feedforward, options.dropout)
            self.encoder = nn.TransformerEncoder(layer, options.layers, enable_nested_tensor=False)
            self.head = nn.Linear(feature_dim, n_ctx * ctx_dim)

    def _forward(self, features: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(features.float(), dim=-1)[None]  # [1, N, D]: one token per image
        return self.head(self.encoder(x)[0]).view(len(features), *self.shape)

    @torch.no_grad()
    def sample(self, features: torch.Tensor) -> torch.Tensor:
        device = self.head.weight.device
        self.encoder.eval()
        return self._forward(features.to(device))

    def state_dict(self) -> dict:
        return module_states(self._modules())

    def load_state_dict(self, state: dict) -> None:
        load_module_states(self._modules(), state)

    def fit(self, backbone, train: FeatureSet, prompt_labels, val: FeatureSet | None) -> dict:
        return fit_generator(self, backbone, train, prompt_labels, val, name="transformer")

    def trainer(self, backbone, train: FeatureSet, prompt_labels) -> Trainer:
        device = backbone.device
        for module in self._modules().values():
            module.to(device)
        targets = torch.stack([label.ctx for label in prompt_labels]).to(device).float()  # [domains, n_ctx, D]
        features, domain_ids = train.features.to(device), train.domain_ids.to(device)
        optimizer = torch.optim.AdamW([*self.encoder.parameters(), *self.head.parameters()], lr=self.schedule.lr,
                                      weight_decay=self.schedule.weight_decay)

        def step(index, rng):
            loss = nn.functional.mse_loss(self._forward(features[index]), targets[domain_ids[index]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"loss": loss.item()}

        return Trainer(step=step, optimizers=[optimizer], modules=(self.encoder, self.head), features=features,
                       min_batch=1)

    def _modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "head": self.head}
