"""Classification with prompts: cosine logits between image features and encoded class prompts.

One shared prompt (zero-shot, CoOp) encodes C class prompts once; instance-specific prompts (SPG)
encode B x C prompts per chunk of B images, with B chosen so that a chunk holds at most
``prompts_per_chunk`` prompts, and classes chunked too when C alone exceeds it (DomainNet: 345).
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import torch

from promptgen.errors import GeneratorError, MethodError
from promptgen.toolkit.prompts import PromptAssembler
from promptgen.components.protocols import Backbone, Generator
from promptgen.values import FeatureSet, PromptLabel

PROMPTS_PER_CHUNK = 4096
SAMPLE_BLOCK = 8192  # images whose prompts are generated at once ([8192, n_ctx, D] is small)


def logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """image [N, E] with text [C, E] (one classifier) or [N, C, E] (one per image) -> logits [N, C]."""
    text_features = text_features.to(image_features.device, image_features.dtype)
    if text_features.ndim == 2:
        return logit_scale * image_features @ text_features.T
    return logit_scale * torch.einsum("ne,nce->nc", image_features, text_features)


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    if len(labels) == 0:
        return float("nan")
    return (scores.argmax(dim=-1).cpu() == labels.cpu()).float().mean().item()


def correct_predictions(scores: torch.Tensor, labels: torch.Tensor, who: str) -> torch.Tensor:
    """Whether each image's top-1 class is its label (bool [N]); a MethodError naming ``who`` when a logit is
    NaN or infinite, which an argmax would otherwise turn into a plausible-looking accuracy."""
    finite = torch.isfinite(scores)
    if not finite.all():
        rows = int((~finite.flatten(1).all(dim=1)).sum()) if scores.ndim > 1 else int((~finite).sum())
        raise MethodError(f"{who}: {rows} of {len(scores)} images have NaN or infinite logits: the training "
                          f"diverged (a learning rate too large, or a NaN in the data); the run was not saved")
    return scores.argmax(dim=-1).cpu() == labels.cpu()


def pack_correct(correct: torch.Tensor, sample_keys: list[str]) -> dict:
    """Per-image correctness as a record keeps it: paired tests between methods need which images each got
    right, not only how many. ``samples`` hashes the images' keys in order, so only predictions of the same
    images in the same order are ever paired."""
    bits = np.packbits(correct.numpy().astype(np.uint8))
    keys = hashlib.blake2b("\n".join(sample_keys).encode(), digest_size=8).hexdigest()
    return {"images": len(correct), "samples": keys, "correct": base64.b64encode(bits.tobytes()).decode()}


def unpack_correct(packed: dict) -> np.ndarray:
    """The bool [N] array ``pack_correct`` stored."""
    bits = np.frombuffer(base64.b64decode(packed["correct"]), np.uint8)
    return np.unpackbits(bits, count=int(packed["images"])).astype(bool)


@torch.no_grad()
def prompt_logits(backbone: Backbone, assembler: PromptAssembler, ctx: torch.Tensor, features: torch.Tensor):
    """Logits [N, C] of one shared context [n_ctx, D]."""
    text = assembler.text_features(backbone, ctx)
    return logits(features.to(backbone.device), text, backbone.logit_scale)


@torch.no_grad()
def prompt_accuracy(backbone: Backbone, prompt: PromptLabel, features: FeatureSet) -> float:
    """Top-1 accuracy of one shared prompt (zero-shot or CoOp) on ``features``."""
    if len(features) == 0:
        return float("nan")
    assembler = PromptAssembler(backbone, prompt.class_names, prompt.n_ctx)
    return accuracy(prompt_logits(backbone, assembler, prompt.ctx, features.features), features.labels)


def generated_prompts(generator: Generator, features: torch.Tensor, n_ctx: int, ctx_dim: int,
                      name: str = "") -> torch.Tensor:
    """``generator.sample(features)``, checked: shape [N, n_ctx, ctx_dim] and finite, else a GeneratorError naming it.

    A generator that returns NaN, infinities or the wrong shape is stopped where it happens (in
    training's validation, at test, in the quality metrics), before its checkpoint is trusted.
    """
    prompts = generator.sample(features)
    who = f"generator '{name}'" if name else f"generator {type(generator).__name__}"
    expected = (len(features), n_ctx, ctx_dim)
    if not isinstance(prompts, torch.Tensor) or tuple(prompts.shape) != expected:
        got = tuple(prompts.shape) if isinstance(prompts, torch.Tensor) else type(prompts).__name__
        raise GeneratorError(f"{who}: sample() returned prompts of shape {got}; expected [N={expected[0]}, "
                             f"n_ctx={n_ctx}, ctx_dim={ctx_dim}]")
    bad = ~torch.isfinite(prompts).flatten(1).all(dim=1)
    if bad.any():
        raise GeneratorError(f"{who}: sample() returned non-finite prompts (NaN or inf) for {int(bad.sum())} of "
                             f"{len(prompts)} images; its training diverged or its output is broken")
    return prompts


@torch.no_grad()
def instance_logits(
    backbone: Backbone,
    assembler: PromptAssembler,
    generator: Generator,
    features: torch.Tensor,
    prompts_per_chunk: int = PROMPTS_PER_CHUNK,
    name: str = "",
) -> torch.Tensor:
    """Logits [N, C] with one generated context per image, batched over images and chunked over classes.

    name: the generator's registered name, for the message when its output is broken.
    """
    out = []
    # Prompts are sampled in fixed blocks, so the noise each image gets does not depend on the chunk size.
    for block_start in range(0, len(features), SAMPLE_BLOCK):
        block = features[block_start : block_start + SAMPLE_BLOCK].to(backbone.device)
        contexts = generated_prompts(generator, block, assembler.n_ctx, assembler.prefix.shape[-1], name)
        out.append(context_logits(backbone, assembler, block, contexts, prompts_per_chunk))
    return torch.cat(out) if out else torch.empty(0, len(assembler.class_names))


@torch.no_grad()
def context_logits(backbone: Backbone, assembler: PromptAssembler, features: torch.Tensor, contexts: torch.Tensor,
                   prompts_per_chunk: int = PROMPTS_PER_CHUNK) -> torch.Tensor:
    """Logits [N, C] of N images, each with its own context ``contexts`` [N, n_ctx, D], chunked as
    :func:`instance_logits` chunks (which calls this with the prompts a generator gives)."""
    classes = len(assembler.class_names)
    images_per_chunk = max(1, prompts_per_chunk // classes)
    class_chunk = max(1, min(classes, prompts_per_chunk))
    out = []
    for start in range(0, len(features), images_per_chunk):
        batch = features[start : start + images_per_chunk].to(backbone.device)
        ctx = contexts[start : start + images_per_chunk].to(backbone.device)
        text = torch.cat(
            [assembler.text_features(backbone, ctx, slice(c, c + class_chunk)) for c in range(0, classes, class_chunk)],
            dim=1,
        )
        out.append(logits(batch, text, backbone.logit_scale).cpu())
    return torch.cat(out) if out else torch.empty(0, classes)


def per_draw(score, features: torch.Tensor, draws: int | None) -> torch.Tensor:
    """``score(features)`` [N, ...] as is (``draws`` None), or for ``draws`` noise draws per image: [draws, N, ...].

    Each image is repeated ``draws`` times in one call, so a generator that draws its noise per row
    (seeded per call, as promptgen's generators do) gives every copy its own draw, reproducibly.
    """
    if draws is None:
        return score(features)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    out = score(features.repeat_interleave(draws, dim=0))
    return out.reshape(len(features), draws, *out.shape[1:]).transpose(0, 1)


def drawn_prompts(generator: Generator, features: torch.Tensor, n_ctx: int, ctx_dim: int, name: str,
                  draws: int | None, device) -> torch.Tensor:
    """The checked prompts [N, n_ctx, D] a generator gives ``features`` (on the CPU); with ``draws``:
    [draws, N, n_ctx, D] (``per_draw``). What a method's optional ``instance_prompts`` returns."""
    return per_draw(lambda f: generated_prompts(generator, f.to(device), n_ctx, ctx_dim, name).cpu(), features, draws)


def instance_accuracy(backbone: Backbone, assembler: PromptAssembler, generator: Generator, features: FeatureSet,
                      name: str = "") -> float:
    return accuracy(instance_logits(backbone, assembler, generator, features.features, name=name), features.labels)
