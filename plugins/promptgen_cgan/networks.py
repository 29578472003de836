"""The SPG networks: an MLP generator (noise + image feature -> prompt) and an MLP discriminator."""

from __future__ import annotations

import torch
from torch import nn

from promptgen.toolkit import condition


CONDITIONS = ("normalised", "scaled")
INITS = ("kaiming", "gan")


def initialise(net: nn.Module, how: str) -> None:
    """"kaiming": the official code's init of both networks (spg_cgan.py:53-56,91-94): kaiming_uniform_ with a = 0
    (fan_in, leaky_relu gain) on every Linear, biases left at PyTorch's default. "gan": promptgen's own (cpu preset),
    a = 0.2 and zero biases on the generator, PyTorch's default on the discriminator."""
    for module in net.modules():
        if isinstance(module, nn.Linear):
            if how == "kaiming":
                nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="leaky_relu")
            elif isinstance(net, PromptGenerator):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="leaky_relu", a=0.2)
                nn.init.zeros_(module.bias)


def conditioned(features: torch.Tensor, how: str) -> torch.Tensor:
    """The image condition both networks see: the L2-normalised feature as it is ("normalised", the official
    code: spg_cgan.py:159,194,298) or rescaled to unit variance per dimension ("scaled":
    promptgen.toolkit.generator_training.condition, which keeps the image from being drowned by the noise on small
    backbones)."""
    return features if how == "normalised" else condition(features)


class PromptGenerator(nn.Module):
    """concat(z, f) -> Linear blocks 128-256-512-1024 (BatchNorm eps 0.8 from the 2nd, LeakyReLU 0.2) -> n_ctx*D, Tanh.

    ``output_scale`` multiplies the Tanh output; 1.0 as in the official code (see CGANGenerator).
    ``condition``: how the image feature enters (:func:`conditioned`).
    """

    def __init__(self, noise_dim: int, feature_dim: int, n_ctx: int, ctx_dim: int, output_scale: float = 1.0,
                 condition: str = "scaled", init: str = "gan"):
        super().__init__()
        self.condition = condition
        widths = (128, 256, 512, 1024)
        layers, previous = [], noise_dim + feature_dim
        for i, width in enumerate(widths):
            layers.append(nn.Linear(previous, width))
            if i > 0:
                layers.append(nn.BatchNorm1d(width, eps=0.8))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            previous = width
        layers += [nn.Linear(previous, n_ctx * ctx_dim), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.shape = (n_ctx, ctx_dim)
        self.output_scale = output_scale
        initialise(self, init)

    def forward(self, noise: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        out = self.net(torch.cat([noise, conditioned(features, self.condition)], dim=1)) * self.output_scale
        return out.view(len(features), *self.shape)


class PromptDiscriminator(nn.Module):
    """concat(flattened prompt, f) -> 512-512-512 (dropout 0.4 on the hidden blocks), LeakyReLU 0.2 -> 1."""

    def __init__(self, feature_dim: int, n_ctx: int, ctx_dim: int, condition: str = "scaled", init: str = "gan"):
        super().__init__()
        self.condition = condition
        self.net = nn.Sequential(
            nn.Linear(n_ctx * ctx_dim + feature_dim, 512), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 512), nn.Dropout(0.4), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 512), nn.Dropout(0.4), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(512, 1),
        )
        initialise(self, init)

    def forward(self, prompts: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([prompts.flatten(1), conditioned(features, self.condition)], dim=1))
