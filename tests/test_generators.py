"""Every registered generator: prompt-shaped samples for any batch and n_ctx, learning on a toy problem whose right
answer is known, and checkpoints that reproduce the same prompts."""

import re

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptgen.toolkit.checkpoints import load_generator, save_generator
from promptgen.errors import ConfigError
from promptgen.components.registry import create, default_registry
from promptgen.values import FeatureSet, PromptLabel

GENERATORS = sorted(default_registry().names("generator"))


def test_the_built_in_generators_are_registered():
    assert {"cgan", "cvae", "diffusion"} <= set(GENERATORS)


@pytest.mark.parametrize("name", GENERATORS)
@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 40), n_ctx=st.integers(1, 6), ctx_dim=st.sampled_from([8, 64]),
       feature_dim=st.sampled_from([16, 128]))
def test_samples_have_the_prompt_shape_for_any_batch_and_context(name, batch, n_ctx, ctx_dim, feature_dim):
    generator = create("generator", name, feature_dim=feature_dim, n_ctx=n_ctx, ctx_dim=ctx_dim, progress=False)
    prompts = generator.sample(torch.nn.functional.normalize(torch.randn(batch, feature_dim), dim=1))
    assert prompts.shape == (batch, n_ctx, ctx_dim) and prompts.dtype == torch.float32
    assert torch.isfinite(prompts).all()


def _toy(backbone, n=400):
    """Two domains as two far-apart clusters of features, with two distinct prompt labels (+-0.3)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(2, 64, generator=g), dim=1)
    domain_ids = torch.arange(n) % 2
    features = torch.nn.functional.normalize(centers[domain_ids] + 0.05 * torch.randn(n, 64, generator=g), dim=1)
    labels = [PromptLabel(ctx=torch.full((2, 64), value), fingerprint=backbone.fingerprint, domain=str(i),
                          class_names=["a", "b"]) for i, value in enumerate((-0.3, 0.3))]
    return FeatureSet(features, torch.zeros(n, dtype=torch.long), domain_ids), labels


@pytest.mark.slow
@pytest.mark.parametrize("name, options", [
    ("cvae", {"epochs": 15, "lr": 2e-3, "warmup_epochs": 1, "kl_warmup_epochs": 2}),
    ("diffusion", {"epochs": 15, "lr": 2e-3, "warmup_epochs": 1, "sample_steps": 10}),
    ("diffusion", {"epochs": 15, "lr": 2e-3, "warmup_epochs": 1, "sample_steps": 5, "guidance": 1.0}),
    ("transformer", {"epochs": 15, "lr": 2e-3, "warmup_epochs": 1, "batch_size": 32}),
])
def test_generator_learns_which_prompt_belongs_to_which_domain(tiny_backbone, name, options):
    train, labels = _toy(tiny_backbone)
    generator = create("generator", name, feature_dim=64, n_ctx=2, ctx_dim=64, progress=False, **options)
    before = generator.sample(train.features)
    report = generator.fit(tiny_backbone, train, labels, None)
    after = generator.sample(train.features)
    targets = torch.stack([labels[d].ctx for d in train.domain_ids])
    error_before, error_after = (before - targets).abs().mean(), (after - targets).abs().mean()
    assert error_after < 0.25 * error_before, (error_before, error_after)
    assert ((after.mean(dim=(1, 2)) > 0) == (train.domain_ids == 1)).float().mean() > 0.95
    assert len(report["history"]) == options["epochs"]


def test_cvae_mean_mode_is_deterministic_and_random_mode_varies_with_the_noise(tiny_backbone):
    train, labels = _toy(tiny_backbone, n=64)
    generator = create("generator", "cvae", feature_dim=64, n_ctx=2, ctx_dim=64, epochs=2, progress=False)
    generator.fit(tiny_backbone, train, labels, None)
    feature = train.features[:1].repeat(8, 1)
    assert generator.sample(feature).std(dim=0).max() > 0  # 8 noise draws for one image differ
    generator.options = attrs.evolve(generator.options, sample_mode="mean")
    assert generator.sample(feature).std(dim=0).max() == 0


@pytest.mark.parametrize("name, options, message", [
    ("cvae", {"sample_mode": "median"}, "generator 'cvae' (plugin cvae): option 'sample_mode' must be one of 'random', "
                                       "'mean', got 'median'"),
    ("diffusion", {"sample_steps": 0}, "option 'sample_steps' must be >= 1, got 0"),
    ("diffusion", {"sample_steps": 1001}, "diffusion: sample_steps must be between 1 and timesteps=1000"),
    ("diffusion", {"guidance": 2.0, "cond_drop": 0.0}, "guidance needs the unconditional model"),
    ("diffusion", {"prediction": "v"}, "option 'prediction' must be one of 'x0', 'epsilon', got 'v'"),
])
def test_bad_generator_options_are_named(name, options, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        create("generator", name, feature_dim=8, n_ctx=2, ctx_dim=8, **options)


def test_diffusion_with_noise_prediction_trains_and_samples_prompts(tiny_backbone):
    train, labels = _toy(tiny_backbone, n=64)
    generator = create("generator", "diffusion", feature_dim=64, n_ctx=2, ctx_dim=64, prediction="epsilon",
                       epochs=2, progress=False)
    report = generator.fit(tiny_backbone, train, labels, None)
    prompts = generator.sample(train.features)
    assert prompts.shape == (64, 2, 64) and torch.isfinite(prompts).all()
    # the DDIM x0 estimate is clamped to the prompt labels' range, so prompts stay within it
    assert prompts.abs().max() <= 0.3 + 1e-5 and report["history"][-1]["loss"] < report["history"][0]["loss"]


@pytest.mark.parametrize("name", GENERATORS)
def test_checkpoint_reproduces_the_same_prompts(tmp_path, tiny_backbone, name):
    train, labels = _toy(tiny_backbone, n=64)
    options = {"feature_dim": 64, "n_ctx": 2, "ctx_dim": 64, "epochs": 1, "batch_size": 16, "seed": 3}
    generator = create("generator", name, **options, progress=False)
    generator.fit(tiny_backbone, train, labels, None)
    save_generator(generator, name, options, tmp_path / "generator")
    loaded, loaded_name, loaded_options = load_generator(tmp_path / "generator")
    assert loaded_name == name and loaded_options == options
    assert torch.equal(loaded.sample(train.features), generator.sample(train.features))
