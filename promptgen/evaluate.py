"""Classification with prompts: cosine logits between image features and encoded class prompts."""

from __future__ import annotations

import torch

from promptgen.prompts import PromptAssembler
from promptgen.protocols import Backbone
from promptgen.values import FeatureSet, PromptLabel


def logits(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """image [N, E] with text [C, E] (one classifier) or [N, C, E] (one per image) -> logits [N, C]."""
    text_features = text_features.to(image_features.device, image_features.dtype)
    if text_features.ndim == 2:
        return logit_scale * image_features @ text_features.T
    return logit_scale * torch.einsum("ne,nce->nc", image_features, text_features)


@torch.no_grad()
def prompt_accuracy(backbone: Backbone, prompt: PromptLabel, features: FeatureSet) -> float:
    """Top-1 accuracy of one shared prompt (zero-shot or CoOp) on ``features``."""
    if len(features) == 0:
        return float("nan")
    assembler = PromptAssembler(backbone, prompt.class_names, prompt.n_ctx)
    text = assembler.text_features(backbone, prompt.ctx)
    predictions = logits(features.features, text, backbone.logit_scale).argmax(dim=-1).cpu()
    return (predictions == features.labels).float().mean().item()
