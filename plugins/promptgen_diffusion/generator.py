"""DiffusionGenerator: stage II as a conditional denoising diffusion model over the flattened prompt.

Training (Ho et al. 2020): x0 is the prompt label in the normalised space of
:class:`promptgen.toolkit.generator_training.PromptScaler`; t ~ U{0..T-1}, eps ~ N(0, I),
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps with the cosine schedule (Nichol & Dhariwal 2021), and
an MLP denoiser is trained with the MSE on what it predicts (``prediction``):

  "epsilon"  the noise, the standard loss of DDPM;
  "x0"       the clean prompt, as DALL-E 2's diffusion prior does for CLIP embeddings (the default).

Why x0 by default: stage II targets are a few far-apart points (one prompt label per source
domain), so x_t reveals which one it came from at every noise level but the very highest, where an
error in the predicted noise costs almost nothing. An eps-model therefore learns to ignore the image
and samples a random domain's prompt (on the two-domain toy problem of tests/test_generators.py:
50% of samples follow the image with eps, 100% with x0). Predicting x0 pays the full price for
the wrong domain at every t. The image condition is dropped (replaced by a null flag) with
probability ``cond_drop``, so the same network is also unconditional — what classifier-free
guidance needs.

Sampling: DDIM with eta = 0 (Song et al. 2021), ``sample_steps`` steps evenly spaced over T,
deterministic given the initial noise (seeded by ``sample_seed``); each step's estimate of x0 is
clamped to the range of the normalised prompt labels. With ``guidance`` w > 0 the noise
estimate is (1 + w) eps(x, t, f) - w eps(x, t, null) (Ho & Salimans 2022; the same for x0); w = 0 is
the plain conditional model.
"""

from __future__ import annotations

import math

from typing import Annotated

import attrs
import torch
from torch import nn

from promptgen.toolkit import (
    condition, ConfigError, FeatureSet, fit_generator, GENERATOR_LR, GENERATOR_PRESETS, GeneratorScheduleOptions,
    load_module_states, module_states, option, PromptScaler, Trainer,
)

TIME_FEATURES = 64
PREDICTIONS = ("x0", "epsilon")


def cosine_alpha_bar(timesteps: int, offset: float = 0.008) -> torch.Tensor:
    """abar_t for t = 0..T-1 (t = 0 is the first noising step), clipped as in Nichol & Dhariwal."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()


def time_embedding(t: torch.Tensor, size: int = TIME_FEATURES) -> torch.Tensor:
    """Sinusoidal features of integer timesteps [B] -> [B, size]."""
    half = size // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class Denoiser(nn.Module):
    """concat(x_t, condition(f) or 0, null flag, time features) -> SiLU MLP -> eps or x0."""

    def __init__(self, size: int, feature_dim: int, hidden: int, layers: int):
        super().__init__()
        blocks, previous = [], size + feature_dim + 1 + TIME_FEATURES
        for _ in range(layers):
            blocks += [nn.Linear(previous, hidden), nn.SiLU()]
            previous = hidden
        self.net = nn.Sequential(*blocks, nn.Linear(previous, size))

    def forward(self, x: torch.Tensor, t: torch.Tensor, features: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """keep [B] in {0, 1}: 1 uses the image condition, 0 the null condition."""
        keep = keep.to(x.dtype)[:, None]
        inputs = [x, condition(features) * keep, 1 - keep, time_embedding(t)]
        return self.net(torch.cat(inputs, dim=1))


class DiffusionGenerator:
    """Conditional diffusion: an MLP denoiser on the flattened prompt, DDIM sampling, optional classifier-free guidance."""

    presets = GENERATOR_PRESETS  # no paper gives official values: those of the SPG stage II it stands in for

    @attrs.frozen(kw_only=True)
    class Options(GeneratorScheduleOptions):
        hidden: Annotated[int, option("width of the denoiser MLP's hidden layers", minimum=1)] = 512
        layers: Annotated[int, option("hidden layers of the denoiser MLP", minimum=1)] = 3
        timesteps: Annotated[int, option("diffusion steps T of the cosine noise schedule", minimum=1)] = 1000
        sample_steps: Annotated[int, option("DDIM steps when sampling, evenly spaced over the T timesteps (at most "
                                            "T)", minimum=1)] = 10
        guidance: Annotated[float, option("classifier-free guidance weight w (0: the plain conditional model; > 0 "
                                          "needs cond_drop > 0)", minimum=0)] = 0.0
        cond_drop: Annotated[float, option("share of conditions dropped in training (classifier-free guidance)",
                                           minimum=0, below=1)] = 0.1
        prediction: Annotated[str, option("what the denoiser predicts: 'x0' the clean prompt, 'epsilon' the noise "
                                          "(DDPM's loss)", choices=PREDICTIONS)] = "x0"
        sample_seed: Annotated[int, option("seed of the initial noise when sampling prompts (the same every "
                                           "call)")] = 0
        lr: Annotated[float, GENERATOR_LR] = 1e-3

    def __init__(self, feature_dim: int, n_ctx: int, ctx_dim: int, options: Options = Options()):
        if options.sample_steps > options.timesteps:
            raise ConfigError(f"diffusion: sample_steps must be between 1 and timesteps={options.timesteps}, got "
                              f"{options.sample_steps}")
        if options.guidance > 0 and options.cond_drop == 0:
            raise ConfigError("diffusion: guidance needs the unconditional model: train with cond_drop > 0")
        self.options = options
        self.schedule = options.schedule
        self.shape, self.size = (n_ctx, ctx_dim), n_ctx * ctx_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            self.denoiser = Denoiser(self.size, feature_dim, options.hidden, options.layers)
        self.scaler = PromptScaler(self.size)
        self.alpha_bar = cosine_alpha_bar(options.timesteps)

    # --- the Generator protocol ---------------------------------------------------------------

    @torch.no_grad()
    def sample(self, features: torch.Tensor) -> torch.Tensor:
        """DDIM (eta = 0) from seeded noise: features [N, feature_dim] -> prompts [N, n_ctx, ctx_dim]."""
        device = self.scaler.center.device
        features = features.to(device, torch.float32)
        alpha_bar = self.alpha_bar.to(device)
        seeded = torch.Generator().manual_seed(self.options.sample_seed)
        x = torch.randn(len(features), self.size, generator=seeded).to(device)
        times = torch.linspace(len(alpha_bar) - 1, 0, self.options.sample_steps).round().long().tolist()
        self.denoiser.eval()
        for i, t in enumerate(times):
            a_t = alpha_bar[t]
            a_prev = alpha_bar[times[i + 1]] if i + 1 < len(times) else torch.ones((), device=device)
            output = self._estimate(x, torch.full((len(x),), t, device=device), features)
            if self.options.prediction == "epsilon":
                # Clamp the x0 estimate to the prompt labels' range: at the noisiest steps 1 / sqrt(abar_t)
                # is in the hundreds and would amplify any error in eps (images clamp to [-1, 1] likewise).
                x0 = ((x - (1 - a_t).sqrt() * output) / a_t.sqrt()).clamp(-self.scaler.bound, self.scaler.bound)
            else:
                x0 = output.clamp(-self.scaler.bound, self.scaler.bound)
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return self.scaler.denormalize(x, self.shape)

    def state_dict(self) -> dict:
        return module_states({"denoiser": self.denoiser, "scaler": self.scaler})

    def load_state_dict(self, state: dict) -> None:
        load_module_states({"denoiser": self.denoiser, "scaler": self.scaler}, state)

    def fit(self, backbone, train: FeatureSet, prompt_labels, val: FeatureSet | None) -> dict:
        return fit_generator(self, backbone, train, prompt_labels, val, name="diffusion")

    def trainer(self, backbone, train: FeatureSet, prompt_labels) -> Trainer:
        """The networks on the backbone's device, the optimizer and one step
        (promptgen.toolkit.generator_training.Trainer)."""
        device = backbone.device
        self.denoiser.to(device)
        self.scaler.to(device)
        targets = torch.stack([label.ctx for label in prompt_labels]).to(device)
        self.scaler.fit(targets)
        normalized = self.scaler.normalize(targets)  # [domains, P]
        features, domain_ids = train.features.to(device), train.domain_ids.to(device)
        optimizer = torch.optim.AdamW(self.denoiser.parameters(), lr=self.schedule.lr,
                                      weight_decay=self.schedule.weight_decay)

        def step(index, rng):
            loss = self.loss(normalized[domain_ids[index]], features[index], rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return {"loss": loss.item()}

        return Trainer(step=step, optimizers=[optimizer], modules=(self.denoiser,), features=features, min_batch=1)

    # --- internals ----------------------------------------------------------------------------

    def loss(self, x0: torch.Tensor, features: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """The MSE of the predicted noise (or x0) at random timesteps, the condition dropped at rate cond_drop."""
        device = x0.device
        t = torch.randint(len(self.alpha_bar), (len(x0),), generator=rng).to(device)
        eps = torch.randn(x0.shape, generator=rng).to(device)
        keep = (torch.rand(len(x0), generator=rng) >= self.options.cond_drop).to(device)
        a = self.alpha_bar.to(device)[t][:, None]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        target = eps if self.options.prediction == "epsilon" else x0
        return (self.denoiser(x_t, t, features, keep) - target).pow(2).mean()

    def _estimate(self, x, t, features):
        conditional = self.denoiser(x, t, features, torch.ones(len(x), device=x.device))
        if self.options.guidance == 0:
            return conditional
        unconditional = self.denoiser(x, t, features, torch.zeros(len(x), device=x.device))
        return (1 + self.options.guidance) * conditional - self.options.guidance * unconditional
