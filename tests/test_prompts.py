"""Prompt assembly: [SOS] ctx_1..ctx_n <class tokens> . [EOT], shared or per image."""

from __future__ import annotations

import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptgen.errors import PromptgenError
from promptgen.toolkit.prompts import PromptAssembler, phrase_embedding

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10)
class_name = st.lists(words, min_size=1, max_size=3).map(" ".join)
class_names = st.lists(class_name, min_size=1, max_size=12)
TOKENIZER = open_clip.SimpleTokenizer()


def expected_eot(n_ctx: int, name: str) -> int:
    """SOS + n_ctx context tokens + the BPE tokens of 'name.' -> the EOT position."""
    return 1 + n_ctx + len(TOKENIZER.encode(f"{name}."))


@settings(max_examples=60, deadline=None)
@given(names=class_names, n_ctx=st.integers(1, 16), batch=st.integers(1, 4))
def test_shapes_and_eot_positions(tiny_backbone, names, n_ctx, batch):
    assembler = PromptAssembler(tiny_backbone, names, n_ctx)
    dim = tiny_backbone.ctx_dim
    eot = torch.tensor([expected_eot(n_ctx, name) for name in names])
    assert torch.equal(assembler.eot_index.cpu(), eot)
    assert assembler.length == int(eot.max()) + 1

    ctx = torch.randn(n_ctx, dim)
    shared, shared_eot = assembler.assemble(ctx)
    assert shared.shape == (len(names), assembler.length, dim)
    assert torch.equal(shared[:, 1 : 1 + n_ctx], ctx.expand(len(names), -1, -1))

    # The token at each EOT position is the tokenizer's EOT token, embedded.
    eot_embedding = tiny_backbone.embed_tokens(torch.tensor([TOKENIZER.eot_token_id]))[0]
    assert torch.equal(shared[torch.arange(len(names)), shared_eot], eot_embedding.expand(len(names), -1))

    per_image = torch.randn(batch, n_ctx, dim)
    batched, batched_eot = assembler.assemble(per_image)
    assert batched.shape == (batch, len(names), assembler.length, dim)
    assert batched_eot.shape == (batch, len(names))
    for b in range(batch):  # per-image assembly is the shared assembly with that image's context
        assert torch.equal(batched[b], assembler.assemble(per_image[b])[0])


def test_zero_shot_context_reproduces_the_plain_text_prompt(tiny_backbone):
    names = ["dog", "red panda", "ice cream cone"]
    ctx = phrase_embedding(tiny_backbone, "a photo of a")
    assert ctx.shape == (4, tiny_backbone.ctx_dim)
    assembled = PromptAssembler(tiny_backbone, names, 4).text_features(tiny_backbone, ctx)
    plain = tiny_backbone.encode_text([f"a photo of a {name}." for name in names])
    assert torch.allclose(assembled, plain, atol=1e-6)


def test_per_image_text_features_have_one_classifier_per_image(tiny_backbone):
    assembler = PromptAssembler(tiny_backbone, ["cat", "dog"], 3)
    ctx = torch.randn(5, 3, tiny_backbone.ctx_dim)
    features = assembler.text_features(tiny_backbone, ctx)
    assert features.shape == (5, 2, tiny_backbone.embed_dim)
    assert torch.allclose(features[2], assembler.text_features(tiny_backbone, ctx[2]), atol=1e-6)
    assert torch.allclose(features.norm(dim=-1), torch.ones(5, 2), atol=1e-5)


def test_wrong_context_shape_is_a_clear_error(tiny_backbone):
    assembler = PromptAssembler(tiny_backbone, ["cat"], 4)
    with pytest.raises(PromptgenError, match=r"context must have shape \[n_ctx=4, 64\]"):
        assembler.assemble(torch.randn(3, 64))


def test_prompt_longer_than_the_context_length_is_refused(tiny_backbone):
    with pytest.raises(PromptgenError, match="longer than the context length"):
        PromptAssembler(tiny_backbone, ["cat"], 80)
