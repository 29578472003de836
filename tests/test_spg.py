"""SPG's pieces: CoOp prompt labels, the CGAN generator, checkpoints and instance-specific inference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptgen.toolkit.checkpoints import load_generator, load_prompt_label, save_generator, save_prompt_label
from promptgen.toolkit.data import extract_features
from promptgen.toolkit.evaluate import instance_logits, prompt_accuracy
from promptgen.toolkit.prompts import PromptAssembler
from promptgen.components.registry import create
from promptgen.values import FeatureSet, PromptLabel
from promptgen_cgan.generator import CGANGenerator


@pytest.fixture(scope="module")
def digits_backbone():
    return create("backbone", "tiny-clip-digits", device="cpu")


@pytest.fixture(scope="module")
def typeset(digits_backbone):
    dataset = create("dataset", "digits-dg")
    split = {s: extract_features(digits_backbone, dataset, dataset.samples("typeset", s), progress=False)
             for s in ("train", "val")}
    return dataset, split


@pytest.mark.slow
def test_coop_beats_zero_shot_on_its_own_domain(digits_backbone, typeset):
    dataset, split = typeset
    zero_shot = create("prompt_learner", "zeroshot").fit(digits_backbone, dataset.classes, None, None, "typeset")
    coop = create("prompt_learner", "coop", epochs=8, lr=2e-2, progress=False)
    label = coop.fit(digits_backbone, dataset.classes, split["train"], split["val"], "typeset")
    assert label.ctx.shape == (4, digits_backbone.ctx_dim)
    assert label.fingerprint == digits_backbone.fingerprint and label.metadata["selected_on"] == "val"
    assert label.metadata["val_accuracy"] == pytest.approx(prompt_accuracy(digits_backbone, label, split["val"]))
    assert prompt_accuracy(digits_backbone, label, split["val"]) >= prompt_accuracy(
        digits_backbone, zero_shot, split["val"]) + 0.01


@pytest.mark.slow
def test_coop_with_the_cpu_preset_visibly_learns_on_digits_dg(digits_backbone, typeset):
    """The cpu preset's schedule (no lr raised by hand): the train loss falls epoch by epoch, the val accuracy
    moves, and the saved config says how many context vectors the label has."""
    from promptgen.components.presets import component_preset
    from promptgen_coop.learner import CoOpPrompt

    dataset, split = typeset
    options = {**component_preset(CoOpPrompt, "cpu", "digits-dg"), "progress": False}
    label = create("prompt_learner", "coop", **options).fit(digits_backbone, dataset.classes, split["train"],
                                                              split["val"], "typeset")
    history = label.metadata["history"]
    assert len(history) == options["epochs"] and history[-1]["train_loss"] < history[0]["train_loss"]
    assert len({round(row["val_accuracy"], 6) for row in history}) > 1
    assert label.metadata["config"]["n_ctx"] == label.n_ctx == 4  # "a photo of a": 4 vectors, whatever n_ctx says


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 70), n_ctx=st.integers(1, 8), ctx_dim=st.sampled_from([8, 64]), feature_dim=st.sampled_from([16, 128]))
def test_generator_output_has_the_prompt_shape(batch, n_ctx, ctx_dim, feature_dim):
    generator = CGANGenerator(feature_dim, n_ctx, ctx_dim, CGANGenerator.Options(progress=False))
    prompts = generator.sample(torch.randn(batch, feature_dim))
    assert prompts.shape == (batch, n_ctx, ctx_dim) and prompts.dtype == torch.float32
    assert torch.isfinite(prompts).all() and prompts.abs().max() <= 1.0


@pytest.mark.slow
def test_cgan_learns_which_prompt_belongs_to_which_domain(tiny_backbone):
    """Two domains, two far-apart clusters of features, two distinct prompt labels: G(z, f) must follow f."""
    g = torch.Generator().manual_seed(0)
    centers = torch.nn.functional.normalize(torch.randn(2, 64, generator=g), dim=1)
    domain_ids = torch.arange(400) % 2
    features = torch.nn.functional.normalize(centers[domain_ids] + 0.05 * torch.randn(400, 64, generator=g), dim=1)
    labels = [PromptLabel(ctx=torch.full((2, 64), value), fingerprint=tiny_backbone.fingerprint, domain=str(i),
                          class_names=["a", "b"]) for i, value in enumerate((-0.3, 0.3))]
    generator = CGANGenerator(64, 2, 64, CGANGenerator.Options(epochs=40, lr=2e-4, warmup_epochs=1, progress=False))
    before = generator.sample(features)
    generator.fit(tiny_backbone, FeatureSet(features, torch.zeros(400, dtype=torch.long), domain_ids), labels, None)
    after = generator.sample(features)
    targets = torch.stack([labels[d].ctx for d in domain_ids])
    error_before, error_after = (before - targets).abs().mean(), (after - targets).abs().mean()
    assert error_after < 0.5 * error_before
    assert ((after.mean(dim=(1, 2)) > 0) == (domain_ids == 1)).float().mean() > 0.9


def test_checkpoints_round_trip_bit_identically(tmp_path, tiny_backbone):
    generator = CGANGenerator(64, 3, 64, CGANGenerator.Options(seed=5, progress=False))
    options = {"feature_dim": 64, "n_ctx": 3, "ctx_dim": 64, "seed": 5}
    save_generator(generator, "cgan", options, tmp_path / "generator")
    loaded, name, loaded_options = load_generator(tmp_path / "generator")
    assert name == "cgan" and loaded_options == options
    for key, value in generator.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    features = torch.randn(7, 64)
    assert torch.equal(loaded.sample(features), generator.sample(features))

    label = PromptLabel(ctx=torch.randn(4, 64), fingerprint="fp", domain="photo", class_names=["one", "two"],
                        metadata={"val_accuracy": 0.5})
    save_prompt_label(label, tmp_path / "labels" / "photo")
    again = load_prompt_label(tmp_path / "labels" / "photo.safetensors")
    assert torch.equal(again.ctx, label.ctx) and again.class_names == label.class_names
    assert again.metadata == label.metadata and again.fingerprint == "fp"


def test_instance_inference_is_chunked_without_changing_results(tiny_backbone):
    names = [f"class {i}" for i in range(23)]
    assembler = PromptAssembler(tiny_backbone, names, 2)
    generator = CGANGenerator(64, 2, 64, CGANGenerator.Options(progress=False))
    features = torch.nn.functional.normalize(torch.randn(9, 64), dim=1)
    whole = instance_logits(tiny_backbone, assembler, generator, features, prompts_per_chunk=10_000)
    # 5 prompts a chunk: one image at a time, and the 23 classes in chunks of 5
    chunked = instance_logits(tiny_backbone, assembler, generator, features, prompts_per_chunk=5)
    assert whole.shape == (9, 23)
    assert torch.allclose(chunked, whole, atol=1e-5)


def test_per_draw_gives_every_copy_of_an_image_its_own_noise_and_keeps_the_image_order(tiny_backbone):
    from promptgen.toolkit.evaluate import per_draw

    generator = CGANGenerator(tiny_backbone.embed_dim, 2, tiny_backbone.ctx_dim, CGANGenerator.Options(epochs=1))
    features = torch.nn.functional.normalize(torch.randn(5, tiny_backbone.embed_dim), dim=-1)
    drawn = per_draw(generator.sample, features, 3)
    assert drawn.shape == (3, 5, 2, tiny_backbone.ctx_dim)
    assert not torch.allclose(drawn[0], drawn[1])  # the draws differ
    assert torch.equal(per_draw(generator.sample, features, 3), drawn)  # reproducibly
    assert torch.equal(per_draw(generator.sample, features, None), generator.sample(features))
    same = per_draw(lambda f: f * 2, features, 4)  # a deterministic score: every draw is the image's own row
    assert all(torch.equal(same[d], features * 2) for d in range(4))
    with pytest.raises(ValueError, match="draws must be >= 1"):
        per_draw(generator.sample, features, 0)
