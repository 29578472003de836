"""Sharing the prompt prefix across classes (promptgen_openclip.prefix) computes what encoding every prompt whole
computes: the same text features, loss and gradients, for any class names, n_ctx and batch of contexts."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptgen.toolkit.prompts import PromptAssembler


@functools.cache
def _backbone(name: str):
    from promptgen.components.registry import create

    if name == "tiny-clip-digits":
        return create("backbone", name, device="cpu")
    return create("backbone", "openclip", model=name, device="cpu", init_seed=0)


def _whole(backbone, assembler, ctx):
    """The plain path: every prompt assembled and encoded whole (EOT-truncated)."""
    embeddings, eot = assembler.assemble(ctx)
    flat = backbone.encode_prompts(embeddings.reshape(-1, *embeddings.shape[-2:]), eot.reshape(-1))
    return flat.reshape(*eot.shape, -1)


NAMES = st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz -'", min_size=1, max_size=30).filter(str.strip),
                 min_size=1, max_size=12)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pg-tiny-vit-w64", "tiny-clip-digits"])
@settings(max_examples=25, deadline=None)
@given(names=NAMES, n_ctx=st.integers(1, 8), batch=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_shared_prefix_features_equal_whole_prompt_features(model, names, n_ctx, batch, seed):
    backbone = _backbone(model)
    assert backbone.shares_prefix
    assembler = PromptAssembler(backbone, names, n_ctx)
    ctx = torch.randn(batch, n_ctx, backbone.ctx_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        shared, whole = assembler.text_features(backbone, ctx), _whole(backbone, assembler, ctx)
    assert shared.shape == whole.shape == (batch, len(names), backbone.embed_dim)
    # logits are 100 x cosines: |Δlogit| <= 1e-4 needs |Δfeature| <= 1e-6 per unit vector
    assert (100 * (shared - whole)).abs().max() <= 1e-4


@functools.cache
def _double(name: str):
    """The backbone in float64: float32 rounding in a different order must not hide (or fake) a difference."""
    import copy

    backbone = copy.deepcopy(_backbone(name))
    backbone.model.double()
    return backbone


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pg-tiny-vit-w64", "tiny-clip-digits"])
@settings(max_examples=15, deadline=None)
@given(names=NAMES, n_ctx=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_a_coop_step_with_a_shared_prefix_has_the_same_loss_and_gradient(model, names, n_ctx, seed):
    """Stage I's step (one context for all classes, cross-entropy on cosine logits) through both paths, in
    float64 (in float32 the two differ by rounding only: ~1e-5 of a gradient of size ~1)."""
    backbone = _double(model)
    assembler = PromptAssembler(backbone, names, n_ctx)
    rng = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(6, backbone.embed_dim, generator=rng, dtype=torch.float64),
                                           dim=-1)
    labels = torch.randint(len(names), (6,), generator=rng)
    start = 0.02 * torch.randn(n_ctx, backbone.ctx_dim, generator=rng, dtype=torch.float64)
    results = []
    for encode in (assembler.text_features, lambda b, c: _whole(b, assembler, c)):
        ctx = start.clone().requires_grad_(True)
        text = encode(backbone, ctx).double()
        loss = torch.nn.functional.cross_entropy(backbone.logit_scale * images @ text.T, labels)
        loss.backward()
        results.append((loss.detach(), ctx.grad))
    (loss_a, grad_a), (loss_b, grad_b) = results
    assert (loss_a - loss_b).abs() <= 1e-5 and (grad_a - grad_b).abs().max() <= 1e-5


@pytest.mark.slow
def test_shared_prefix_is_exact_on_vit_b_16s_text_tower():
    """The paper's text tower (12 layers, width 512; random weights), DomainNet-like class names."""
    backbone = _backbone("ViT-B-16")
    names = ["aircraft carrier", "alarm clock", "The Eiffel Tower", "t-shirt", "yoga", "zigzag", "hot air balloon"]
    assembler = PromptAssembler(backbone, names, 4)
    ctx = torch.randn(3, 4, backbone.ctx_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (100 * (assembler.text_features(backbone, ctx) - _whole(backbone, assembler, ctx))).abs().max() <= 1e-4


def test_a_backbone_without_the_capability_gets_whole_prompts(tiny_backbone):
    """A third-party backbone need not offer encode_prompt_set: the assembler encodes whole prompts for it."""

    class Plain:
        def __getattr__(self, name):
            if name == "encode_prompt_set":
                raise AttributeError(name)
            return getattr(tiny_backbone, name)

    assembler = PromptAssembler(tiny_backbone, ["cat", "dog"], 2)
    ctx = torch.randn(2, tiny_backbone.ctx_dim)
    with torch.no_grad():
        assert torch.allclose(assembler.text_features(Plain(), ctx), assembler.text_features(tiny_backbone, ctx),
                              atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=400))
def test_length_groups_cover_every_class_once_and_bound_the_padding(lengths):
    from promptgen_openclip.prefix import length_groups

    groups = length_groups(lengths, slack=0.25, min_group=16)
    assert sorted(c for group in groups for c in group) == list(range(len(lengths)))
    for group in groups:
        padded, needed = len(group) * max(lengths[c] for c in group), sum(lengths[c] for c in group)
        # a group is either small or pads at most 25% (a group's last member can push it just past)
        assert len(group) <= 16 or padded <= 1.25 * needed + max(lengths)
