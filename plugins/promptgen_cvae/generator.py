"""CVAEGenerator: stage II as a conditional VAE over the flattened prompt.

Encoder q(z | prompt, f) and decoder p(prompt | z, f) are MLPs; prompts are modelled in the
normalised space of :class:`promptgen.toolkit.generator_training.PromptScaler` (centred on the prompt labels' mean,
divided by their std), where the decoder's likelihood is a unit-variance Gaussian. The loss per
sample, divided by the prompt size P = n_ctx * ctx_dim so the learning rate does not depend on it:

    (0.5 * ||decoder(z, f) - x||^2  +  beta_t * KL(q(z | x, f) || N(0, I))) / P

beta_t rises linearly from 0 to ``beta`` over the first ``kl_warmup_epochs`` (KL annealing, against
posterior collapse early in training). At inference z ~ N(0, I) (``sample_mode="random"``, noise
seeded by ``sample_seed``, so repeatable) or z = 0 (``sample_mode="mean"``, deterministic).
"""

from __future__ import annotations

from typing import Annotated

import attrs
import torch
from torch import nn

from promptgen.toolkit import (
    condition, Epochs, FeatureSet, fit_generator, GENERATOR_LR, GENERATOR_PRESETS, GeneratorScheduleOptions,
    load_module_states, module_states, option, PromptScaler, Trainer,
)

SAMPLE_MODES = ("random", "mean")


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, outputs))


class CVAEGenerator:
    """Conditional VAE: encoder q(z | prompt, feature), decoder p(prompt | z, feature); z ~ N(0, I) or z = 0 at test."""

    presets = GENERATOR_PRESETS  # no paper gives official values: those of the SPG stage II it stands in for

    @attrs.frozen(kw_only=True)
    class Options(GeneratorScheduleOptions):
        latent_dim: Annotated[int, option("width of the latent code z", minimum=1)] = 32
        hidden: Annotated[int, option("width of the encoder's and decoder's two hidden layers", minimum=1)] = 512
        beta: Annotated[float, option("weight of the KL term once annealed (1: the plain ELBO)", minimum=0)] = 1.0
        kl_warmup_epochs: Annotated[int, option("epochs over which the KL weight rises from 0 to beta",
                                                minimum=0)] = 4
        sample_mode: Annotated[str, option("z at inference: 'random' N(0, I) seeded by sample_seed, 'mean' z = 0 "
                                           "(deterministic)", choices=SAMPLE_MODES)] = "random"
        sample_seed: int = 0
        lr: Annotated[float, GENERATOR_LR] = 1e-3

    def __init__(self, feature_dim: int, n_ctx: int, ctx_dim: int, options: Options = Options()):
        self.options = options
        self.schedule = options.schedule
        self.shape = (n_ctx, ctx_dim)
        size = n_ctx * ctx_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            self.encoder = _mlp(size + feature_dim, options.hidden, 2 * options.latent_dim)
            self.decoder = _mlp(options.latent_dim + feature_dim, options.hidden, size)
        self.scaler = PromptScaler(size)

    # --- the Generator protocol ---------------------------------------------------------------

    @torch.no_grad()
    def sample(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, feature_dim] -> prompts [N, n_ctx, ctx_dim]."""
        device = self.scaler.center.device
        if self.options.sample_mode == "mean":
            z = torch.zeros(len(features), self.options.latent_dim)
        else:
            seeded = torch.Generator().manual_seed(self.options.sample_seed)
            z = torch.randn(len(features), self.options.latent_dim, generator=seeded)
        self.decoder.eval()
        flat = self.decoder(torch.cat([z.to(device), condition(features.to(device, torch.float32))], dim=1))
        return self.scaler.denormalize(flat, self.shape)

    def state_dict(self) -> dict:
        return module_states(self._modules())

    def load_state_dict(self, state: dict) -> None:
        load_module_states(self._modules(), state)

    def fit(self, backbone, train: FeatureSet, prompt_labels, val: FeatureSet | None) -> dict:
        return fit_generator(self, backbone, train, prompt_labels, val, name="cvae")

    def trainer(self, backbone, train: FeatureSet, prompt_labels) -> Trainer:
        """The networks on the backbone's device, the optimizer and one step
        (promptgen.toolkit.generator_training.Trainer)."""
        device = backbone.device
        for module in self._modules().values():
            module.to(device)
        targets = torch.stack([label.ctx for label in prompt_labels]).to(device)  # [domains, n_ctx, D]
        self.scaler.fit(targets)
        normalized = self.scaler.normalize(targets)  # [domains, P]
        features, domain_ids = train.features.to(device), train.domain_ids.to(device)
        optimizer = torch.optim.AdamW([*self.encoder.parameters(), *self.decoder.parameters()], lr=self.schedule.lr,
                                      weight_decay=self.schedule.weight_decay)
        steps_per_epoch = Epochs(train, self.schedule.batch_size, torch.Generator()).steps
        warmup_steps = max(1, self.options.kl_warmup_epochs * steps_per_epoch)
        counter = {"step": 0}

        def step(index, rng):
            beta = self.options.beta * min(1.0, (counter["step"] + 1) / warmup_steps)
            counter["step"] += 1
            losses = self.loss(normalized[domain_ids[index]], features[index], beta, rng)
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            return {key: value.item() for key, value in losses.items()}

        return Trainer(step=step, optimizers=[optimizer], modules=(self.encoder, self.decoder), features=features, min_batch=1)

    # --- training internals -------------------------------------------------------------------

    def loss(self, prompts: torch.Tensor, features: torch.Tensor, beta: float, rng: torch.Generator) -> dict:
        """prompts [B, P] (normalised), features [B, F] -> {'loss', 'recon', 'kl'} (means over the batch)."""
        cond = condition(features)
        mean, log_var = self.encoder(torch.cat([prompts, cond], dim=1)).chunk(2, dim=1)
        noise = torch.randn(mean.shape, generator=rng).to(mean.device)
        z = mean + (0.5 * log_var).exp() * noise  # the reparameterisation trick
        recon = 0.5 * (self.decoder(torch.cat([z, cond], dim=1)) - prompts).pow(2).sum(dim=1).mean()
        kl = 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(dim=1).mean()
        size = prompts.shape[1]
        return {"loss": (recon + beta * kl) / size, "recon": recon / size, "kl": kl / size}

    def _modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder, "scaler": self.scaler}
