"""CGANGenerator: SPG's stage II. Learns p(prompt | image feature) from (domain prompt label, feature) pairs.

As in the official code: LSGAN (MSE) losses; real pair = (prompt label of the image's source domain,
feature); fake pair = (G(z, f'), f') with f' the features of a different random batch — drawn here by
random indices into the cached features (O(1)), not by scanning a data loader. AdamW for both nets,
linear warm-up then cosine decay, optional per-parameter gradient clipping (the official limits and name
matching). What the gpu preset runs against the released code: docs/parity.md.
The epoch with the best accuracy on the source domains' validation split is kept.

Output range: the generator ends in Tanh, so prompts lie in [-1, 1] x output_scale. CLIP token
embeddings are far inside that range (ViT-B/16: |x| < 0.1 almost everywhere; tiny-clip-digits: a few
tenths), so the official scale of 1.0 is kept; raise ``output_scale`` for a backbone whose embeddings
are larger (fit warns when a prompt label falls outside the range).
"""

from __future__ import annotations

import warnings

from typing import Annotated

import attrs
import torch
import torch.nn.functional as F

from promptgen.toolkit import (
    ConfigError, FeatureSet, fit_generator, GENERATOR_PRESETS, GeneratorScheduleOptions, load_module_states,
    module_states, option,
    Trainer,
)
from promptgen_cgan.networks import CONDITIONS, INITS, PromptDiscriminator, PromptGenerator

UPDATES = ("d-first", "g-first")  # d-first: the official order; g-first: promptgen's own (the cpu preset's)

# The per-parameter gradient-norm limits the released scripts apply on every dataset: train.py's argparse defaults
# (train.py:274-279), which overwrite the YAML's PACS values (spg.yaml:52-58) because the scripts pass no flags.
OFFICIAL_CLIP = {"d_weight": 5e-2, "d_bias": 5e-1, "d_last": 5.0, "g_weight": 5e-3, "g_bias": 5e-8, "g_bias_last": 1.0}


def clip_limits(net: torch.nn.Module, side: str, limits: dict) -> dict[str, float]:
    """Each parameter's limit, by the official code's name matching (spg_cgan.py:208-227, 242-261) on the same
    nn.Sequential indices: the discriminator's "0." and "8." parameters (its first and last Linear) take
    ``d_last``, other weights ``d_weight``, other biases ``d_bias``; the generator's weights ``g_weight``
    (BatchNorm scales included), the "9.bias" and "11.bias" (the last BatchNorm's shift and the output
    Linear's bias) ``g_bias_last``, other biases ``g_bias``. A limit left out of ``limits`` clips nothing."""
    chosen = {}
    for name, _ in net.named_parameters():
        if side == "d":
            key = "d_last" if any(f"{i}.{kind}" in name for i in (0, 8) for kind in ("weight", "bias")) else \
                "d_weight" if "weight" in name else "d_bias"
        else:
            key = "g_weight" if "weight" in name else "g_bias_last" if ("9.bias" in name or "11.bias" in name) \
                else "g_bias"
        if key in limits:
            chosen[name] = limits[key]
    return chosen


def _clip_limits(grad_clip: dict | str | None) -> dict | None:
    """``grad_clip`` as limits by name: 'official' is OFFICIAL_CLIP; a dict may give some of them."""
    if isinstance(grad_clip, str):
        if grad_clip != "official":
            raise ConfigError(f"cgan: grad_clip must be 'official', a dict of limits or None; got {grad_clip!r}")
        grad_clip = dict(OFFICIAL_CLIP)
    unknown = set(grad_clip or {}) - set(OFFICIAL_CLIP)
    if unknown:
        raise ConfigError(f"cgan: unknown grad_clip keys {sorted(unknown)}; allowed: {', '.join(OFFICIAL_CLIP)}")
    return grad_clip


class CGANGenerator:
    """SPG's conditional GAN: MLP generator (noise + image feature -> prompt), MLP discriminator, LSGAN losses."""

    # gpu: what the released scripts run on every dataset (docs/parity.md): AdamW lr 2e-3 (train.py:74,268; the
    # YAML's 2e-4 is a comment) with default betas (spg_cgan.py:135-136), 70 epochs, batch 32, the argparse clip
    # limits by parameter name, the L2-normalised feature as the condition, D updated first, Kaiming a=0 init,
    # Dassl's per-epoch schedule (linear warm-up from 1e-5 over 4 epochs, spg.yaml:21-25; cosine after it).
    # cpu: batch 128 (4x fewer steps for small MLPs on 2 cores), lr 2e-4, and promptgen's own choices
    # (rescaled condition, betas (0.5, 0.999), G first, its init, per-step cosine), no clipping: docs/parity.md.
    presets = {
        "gpu": {"epochs": 70, "batch_size": 32, "lr": 2e-3, "grad_clip": "official", "condition": "normalised",
                "betas": (0.9, 0.999), "update": "d-first", "init": "kaiming", "lr_schedule": "epoch"},
        "cpu": GENERATOR_PRESETS["cpu"],
    }

    @attrs.frozen(kw_only=True)
    class Options(GeneratorScheduleOptions):
        noise_dim: Annotated[int, option("width of the noise drawn per image (the official code: 100)",
                                         minimum=1)] = 100
        grad_clip: Annotated[dict | str | None, option(
            "per-parameter gradient-norm limits: 'official' (the released scripts'), a dict of some of them, or None "
            "(no clipping)")] = attrs.field(default=None, converter=_clip_limits)
        condition: Annotated[str, option("the image condition: 'normalised' the L2-normalised feature (the official "
                                         "code), 'scaled' rescaled to unit variance per dimension",
                                         choices=CONDITIONS)] = "scaled"
        betas: Annotated[tuple[float, float], option("AdamW's betas of both networks (the official code: PyTorch's "
                                                     "(0.9, 0.999))")] = attrs.field(default=(0.5, 0.999),
                                                                                     converter=tuple)
        update: Annotated[str, option("which network steps first in each step: 'd-first' (the official order) or "
                                      "'g-first'", choices=UPDATES)] = "g-first"
        init: Annotated[str, option("weight init of both networks: 'kaiming' (the official code's, a = 0) or 'gan' "
                                    "(a = 0.2, zero generator biases)", choices=INITS)] = "gan"
        output_scale: Annotated[float, option("scale of the generator's Tanh output: prompts lie in [-scale, scale] "
                                              "(the official code: 1)", above=0)] = 1.0
        sample_seed: int = 0
        batch_size: Annotated[int, option("images per optimizer step (>= 2: the generator's BatchNorm needs two)",
                                          minimum=2)] = 32

    def __init__(self, feature_dim: int, n_ctx: int, ctx_dim: int, options: Options = Options()):
        self.options = options
        self.schedule = options.schedule
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            self.generator = PromptGenerator(options.noise_dim, feature_dim, n_ctx, ctx_dim, options.output_scale,
                                             options.condition, options.init)
            self.discriminator = PromptDiscriminator(feature_dim, n_ctx, ctx_dim, options.condition, options.init)

    # --- the Generator protocol ---------------------------------------------------------------

    @torch.no_grad()
    def sample(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, feature_dim] -> prompts [N, n_ctx, ctx_dim]; noise seeded per call, so repeatable."""
        device = next(self.generator.parameters()).device
        seeded = torch.Generator().manual_seed(self.options.sample_seed)
        noise = torch.randn(len(features), self.options.noise_dim, generator=seeded)
        self.generator.eval()
        return self.generator(noise.to(device), features.to(device, torch.float32))

    def state_dict(self) -> dict:
        return module_states(self._nets())

    def load_state_dict(self, state: dict) -> None:
        load_module_states(self._nets(), state)

    def _nets(self) -> dict:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def fit(self, backbone, train: FeatureSet, prompt_labels, val: FeatureSet | None) -> dict:
        return fit_generator(self, backbone, train, prompt_labels, val, name="cgan")

    def trainer(self, backbone, train: FeatureSet, prompt_labels) -> Trainer:
        """The nets on the backbone's device, their optimizers and one G + D step
        (promptgen.toolkit.generator_training.Trainer)."""
        device = backbone.device
        self.generator.to(device)
        self.discriminator.to(device)
        targets = torch.stack([label.ctx for label in prompt_labels]).to(device)  # [domains, n_ctx, D]
        if targets.abs().max() >= self.options.output_scale:
            warnings.warn(f"cgan: prompt labels reach {targets.abs().max():.2f}, outside the Tanh range "
                          f"+-{self.options.output_scale}; raise output_scale")
        features, domain_ids = train.features.to(device), train.domain_ids.to(device)
        # betas: the official code's AdamW defaults (0.9, 0.999) in the gpu preset; (0.5, 0.999), the usual GAN
        # setting, is the default and the cpu preset's.
        optimizers = [torch.optim.AdamW(net.parameters(), lr=self.schedule.lr, betas=self.options.betas,
                                        weight_decay=self.schedule.weight_decay)
                      for net in (self.generator, self.discriminator)]
        return Trainer(step=lambda index, rng: self._step(features, domain_ids, targets, index, optimizers, rng),
                       optimizers=optimizers, modules=(self.generator, self.discriminator), features=features)

    # --- training internals -------------------------------------------------------------------

    def _step(self, features, domain_ids, targets, index, optimizers, shuffle) -> dict:
        g_opt, d_opt = optimizers
        real_features, real_prompts = features[index], targets[domain_ids[index]]
        fake_index = torch.randint(len(features), (len(index),), generator=shuffle).to(features.device)
        fake_features = features[fake_index]
        noise = torch.randn(len(index), self.options.noise_dim, generator=shuffle).to(features.device)
        fake_prompts = self.generator(noise, fake_features)
        ones = torch.ones(len(index), 1, device=features.device)
        if self.options.update == "d-first":
            return self._d_then_g(real_prompts, real_features, fake_prompts, fake_features, ones, g_opt, d_opt)

        loss_g = F.mse_loss(self.discriminator(fake_prompts, fake_features), ones)
        g_opt.zero_grad(set_to_none=True)
        loss_g.backward()
        self._clip(self.generator, "g")
        g_opt.step()

        loss_d = 0.5 * (F.mse_loss(self.discriminator(real_prompts, real_features), ones)
                        + F.mse_loss(self.discriminator(fake_prompts.detach(), fake_features), 0 * ones))
        d_opt.zero_grad(set_to_none=True)
        loss_d.backward()
        self._clip(self.discriminator, "d")
        d_opt.step()
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item()}

    def _d_then_g(self, real_prompts, real_features, fake_prompts, fake_features, ones, g_opt, d_opt) -> dict:
        """The official order (spg_cgan.py:179-263): the discriminator steps on real + fake (no 1/2), then the
        generator steps against the discriminator as it is after that step."""
        loss_d = (F.mse_loss(self.discriminator(real_prompts, real_features), ones)
                  + F.mse_loss(self.discriminator(fake_prompts.detach(), fake_features), 0 * ones))
        d_opt.zero_grad(set_to_none=True)
        loss_d.backward()
        self._clip(self.discriminator, "d")
        d_opt.step()
        loss_g = F.mse_loss(self.discriminator(fake_prompts, fake_features), ones)
        g_opt.zero_grad(set_to_none=True)
        loss_g.backward()
        self._clip(self.generator, "g")
        g_opt.step()
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item()}

    def _clip(self, net: torch.nn.Module, side: str) -> None:
        """Per-parameter gradient-norm limits (clip_limits): a gradient whose norm exceeds its limit is scaled to it."""
        limits = self.options.grad_clip
        if not limits:
            return
        parameters = dict(net.named_parameters())
        for name, limit in clip_limits(net, side, limits).items():
            if parameters[name].grad is not None:
                torch.nn.utils.clip_grad_norm_(parameters[name], limit)
