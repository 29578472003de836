"""The openclip backbone: exact EOT truncation, checkpoint formats, fingerprints, transforms, offline errors."""

from __future__ import annotations

import socket

import open_clip
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from promptgen.errors import BackboneLoadError
from promptgen.toolkit.prompts import PromptAssembler
from promptgen_openclip.backbone import OpenClipBackbone
from promptgen_openclip.loading import add_tiny_configs

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12)
class_names = st.lists(st.lists(words, min_size=1, max_size=4).map(" ".join), min_size=1, max_size=10)


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(
    names=class_names,
    n_ctx=st.integers(1, 16),
    images=st.integers(1, 3),
    scale=st.sampled_from([0.02, 0.5, 2.0]),
    seed=st.integers(0, 2**16),
    wide=st.booleans(),
)
def test_truncated_encoding_equals_full_length(tiny_backbone, tiny_backbone_wide, names, n_ctx, images, scale, seed, wide):
    backbone = tiny_backbone_wide if wide else tiny_backbone
    ctx = scale * torch.randn(images, n_ctx, backbone.ctx_dim, generator=torch.Generator().manual_seed(seed))
    embeddings, eot = PromptAssembler(backbone, names, n_ctx).assemble(ctx)
    embeddings, eot = embeddings.flatten(0, 1), eot.flatten()
    assert embeddings.shape[1] < backbone.context_length  # the truncated path really is shorter
    truncated = backbone.encode_prompts(embeddings, eot)
    full = backbone.encode_prompts(embeddings, eot, full_length=True)
    assert (truncated - full).abs().max().item() <= 1e-4


def test_full_length_path_is_open_clips_own_text_encoder(tiny_backbone):
    texts = ["a photo of a dog.", "x", "an origami of the great wall of china, seen from far away."]
    ids = open_clip.get_tokenizer("pg-tiny-vit-w64")(texts)
    reference = F.normalize(tiny_backbone.model.encode_text(ids), dim=-1)
    tokens = tiny_backbone.tokenize(texts)
    embeddings = tiny_backbone.embed_tokens(tokens.ids)
    assert torch.allclose(tiny_backbone.encode_prompts(embeddings, tokens.eot_index, full_length=True), reference, atol=1e-6)
    assert torch.allclose(tiny_backbone.encode_prompts(embeddings, tokens.eot_index), reference, atol=1e-5)


def test_prompt_encoding_passes_gradients_to_the_context_only(tiny_backbone):
    assembler = PromptAssembler(tiny_backbone, ["cat", "dog"], 2)
    ctx = torch.zeros(2, tiny_backbone.ctx_dim, requires_grad=True)
    features = assembler.text_features(tiny_backbone, ctx)
    features.sum().backward()
    assert ctx.grad is not None and ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_backbone.model.parameters())


def _features(backbone: OpenClipBackbone) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return backbone.encode_images(pixels), backbone.encode_text(["a photo of a cat.", "a dog"])


@pytest.mark.slow
def test_checkpoint_round_trip_safetensors_and_state_dict(tmp_path):
    original = OpenClipBackbone("pg-tiny-vit-w64", options=OpenClipBackbone.Options(init_seed=7))
    state = {k: v.contiguous() for k, v in original.model.state_dict().items()}
    save_file(state, tmp_path / "tiny.safetensors")
    torch.save(state, tmp_path / "tiny.pt")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "tiny_trainer.pt")

    images, texts = _features(original)
    for name in ("tiny.safetensors", "tiny.pt", "tiny_trainer.pt"):
        loaded = OpenClipBackbone("pg-tiny-vit-w64", pretrained=str(tmp_path / name))
        loaded_images, loaded_texts = _features(loaded)
        assert torch.equal(loaded_images, images), name
        assert torch.equal(loaded_texts, texts), name
        assert loaded.fingerprint == original.fingerprint, name


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, but it is OpenAI's format
def test_openai_torchscript_checkpoint(tmp_path):
    add_tiny_configs()
    # An OpenAI-style archive: a scripted CLIP with QuickGELU and fp16-representable weights, as OpenAI released.
    source = open_clip.create_model("pg-tiny-vit-w64", force_quick_gelu=True).eval()
    for parameter in source.parameters():
        parameter.data = parameter.data.half().float()
    torch.jit.save(torch.jit.script(source), tmp_path / "ViT-tiny.pt")

    loaded = OpenClipBackbone("pg-tiny-vit-w64", pretrained=str(tmp_path / "ViT-tiny.pt"))
    pixels = torch.randn(2, 3, 32, 32)
    ids = open_clip.get_tokenizer("pg-tiny-vit-w64")(["a photo of a cat."])
    with torch.no_grad():
        assert torch.allclose(loaded.encode_images(pixels), F.normalize(source.encode_image(pixels), dim=-1), atol=1e-6)
        assert torch.allclose(
            loaded.encode_text(["a photo of a cat."]), F.normalize(source.encode_text(ids), dim=-1), atol=1e-6
        )


def test_fingerprint_is_stable_and_follows_the_weights():
    a = OpenClipBackbone("pg-tiny-vit-w64", options=OpenClipBackbone.Options(init_seed=3))
    b = OpenClipBackbone("pg-tiny-vit-w64", options=OpenClipBackbone.Options(init_seed=3))
    c = OpenClipBackbone("pg-tiny-vit-w64", options=OpenClipBackbone.Options(init_seed=4))
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.fingerprint.startswith("pg-tiny-vit-w64@")


def test_widths_and_outputs(tiny_backbone_wide):
    backbone = tiny_backbone_wide
    assert (backbone.ctx_dim, backbone.embed_dim, backbone.context_length) == (128, 128, 77)
    images, texts = _features(backbone)
    assert images.shape == (3, 128) and texts.shape == (2, 128)
    assert images.dtype == torch.float32
    assert torch.allclose(images.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_image_transforms(tiny_backbone):
    image = Image.new("L", (50, 40), color=128)  # grey, not square: converted to RGB and cropped
    train, evaluate = tiny_backbone.image_transform(True), tiny_backbone.image_transform(False)
    assert train(image).shape == evaluate(image).shape == (3, 32, 32)
    assert torch.equal(evaluate(image), evaluate(image))  # eval is deterministic
    flips = [type(t).__name__ for t in train.transforms]
    assert "RandomResizedCrop" in flips and "RandomHorizontalFlip" in flips


def test_unreachable_pretrained_tag_fails_fast_with_advice(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(open_clip, "create_model", lambda *a, **k: pytest.fail("must not try to download"))
    with pytest.raises(BackboneLoadError) as caught:
        OpenClipBackbone("ViT-B-32", pretrained="openai", options=OpenClipBackbone.Options(cache_dir=str(tmp_path)))
    message = str(caught.value)
    assert "cannot download pretrained weights 'openai'" in message
    assert "--pretrained /path/to/weights" in message


@pytest.mark.parametrize(
    "model, pretrained, expected",
    [
        ("ViT-B-32", "no-such-tag", "neither a pretrained tag"),
        ("pg-tiny-vit-w64", "/no/such/file.safetensors", "checkpoint file not found"),
        ("no-such-model", None, "unknown open_clip model 'no-such-model'"),
    ],
)
def test_bad_backbone_arguments(model, pretrained, expected):
    with pytest.raises(BackboneLoadError, match=expected):
        OpenClipBackbone(model, pretrained=pretrained)


def test_checkpoint_for_another_architecture_names_the_file(tmp_path):
    wide = OpenClipBackbone("pg-tiny-vit-w128")
    save_file({k: v.contiguous() for k, v in wide.model.state_dict().items()}, tmp_path / "wide.safetensors")
    with pytest.raises(BackboneLoadError, match="wide.safetensors: could not load"):
        OpenClipBackbone("pg-tiny-vit-w64", pretrained=str(tmp_path / "wide.safetensors"))
