"""Contrastive pretraining of `tiny-clip-digits` on image-caption pairs of the digits world.

Pairs are generated on the fly from the pretraining distribution (world.pretraining_image, captioned by the chosen recipe) in a
DataLoader worker, seeded, so a run sees fresh pairs every step and is reproducible. Captions that
are identical within a batch are indistinguishable, so they count as positives of each other.
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from promptgen.toolkit import autocast, integer, number, warmup_cosine
from promptgen_digits import styles, world
from promptgen_digits.backbone import MODEL_NAME, add_model_config


@attrs.frozen
class PretrainConfig:
    steps: int = attrs.field(default=2000, validator=integer(1))
    batch_size: int = attrs.field(default=256, validator=integer(2))
    lr: float = attrs.field(default=1e-3, validator=number(0.0, inclusive=False))
    warmup_steps: int = attrs.field(default=100, validator=integer(0))
    weight_decay: float = attrs.field(default=0.1, validator=number(0.0))
    seed: int = attrs.field(default=0, validator=integer(0))
    image_size: int = attrs.field(default=32, validator=integer(8))
    captions: str = attrs.field(default="templates", validator=attrs.validators.in_(tuple(world.CAPTION_RECIPES)))


class PairStream(torch.utils.data.IterableDataset):
    """``steps`` batches of (images uint8 [B, S, S, 3], captions) from the pretraining distribution."""

    def __init__(self, config: PretrainConfig):
        self.config = config

    def __iter__(self):
        c = self.config
        rng = np.random.default_rng([c.seed, 7])
        for _ in range(c.steps):
            caption = world.CAPTION_RECIPES[c.captions]
            pairs = []
            for _ in range(c.batch_size):
                image, label, style, font = world.pretraining_image(rng)
                pairs.append((image, caption(label, style, font, rng)))
            images = np.stack([styles.finish(image, c.image_size) for image, _ in pairs])
            yield torch.from_numpy(images), [text for _, text in pairs]


def normalise_pixels(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 [B, S, S, 3] -> normalised float [B, 3, S, S] (the eval transform, without PIL)."""
    pixels = images.permute(0, 3, 1, 2).float() / 255.0
    return (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def clip_optimizer(named_parameters, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """CLIP's AdamW (betas 0.9/0.98, eps 1e-6): weight decay on matrices only, not on embeddings, biases or norms."""
    decay = [p for n, p in named_parameters if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in named_parameters if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98), eps=1e-6)


def clip_loss(image_features, text_features, logit_scale, captions) -> torch.Tensor:
    """Symmetric InfoNCE where identical captions are positives of each other."""
    logits = logit_scale * image_features @ text_features.T
    codes = {caption: i for i, caption in enumerate(dict.fromkeys(captions))}
    ids = torch.tensor([codes[caption] for caption in captions], device=logits.device)
    same = (ids[:, None] == ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def pretrain(config: PretrainConfig, out_dir: Path, *, device: str = "auto", progress: bool = True) -> dict:
    """Train from random weights, save ``tiny-clip-digits.safetensors`` (fp16) and return the training facts."""
    from open_clip import get_model_preprocess_cfg

    from promptgen_openclip.backbone import OpenClipBackbone

    add_model_config()
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    backbone = OpenClipBackbone(MODEL_NAME, device=device, precision="auto",
                                options=OpenClipBackbone.Options(init_seed=config.seed))
    model = backbone.model.train().requires_grad_(True)
    preprocess = get_model_preprocess_cfg(model)
    optimizer = clip_optimizer(list(model.named_parameters()), config.lr, config.weight_decay)
    loader = torch.utils.data.DataLoader(PairStream(config), batch_size=None, num_workers=1, prefetch_factor=4)
    losses = []
    bar = tqdm(loader, total=config.steps, desc="pretrain tiny-clip-digits", unit="step", disable=not progress)
    for step, (images, captions) in enumerate(bar):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, config.steps, config.warmup_steps, config.lr)
        pixels = normalise_pixels(images, preprocess["mean"], preprocess["std"]).to(backbone.device)
        tokens = backbone.tokenize(captions)
        with autocast(backbone.device, backbone.autocast_dtype):
            image_features = F.normalize(model.encode_image(pixels).float(), dim=-1)
        text_features = backbone.encode_prompts(backbone.embed_tokens(tokens.ids), tokens.eot_index)
        loss = clip_loss(image_features, text_features, model.logit_scale.exp().clamp(max=100), captions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{MODEL_NAME}.safetensors"
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, weights)
    return {
        "config": attrs.asdict(config),
        "device": str(backbone.device),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "weights": weights.name,
        "weights_mb": round(weights.stat().st_size / 2**20, 2),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }
