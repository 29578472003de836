"""LiT for tiny-clip-digits: retrain only the text tower against cached features of a locked image tower.

Zhai et al., "LiT: Locked-image Text Tuning" (CVPR 2022): with the image tower locked, its features of
a fixed pool of pretraining images are computed once (through promptgen's feature cache, keyed by the
image tower alone) and the text tower learns from random weights to match them. No image is encoded
during training, so a world trial costs minutes instead of a whole CLIP pretraining.

Every step's batch and captions are drawn from a generator seeded by (seed, step), and a checkpoint
holds the weights and the optimizer, so a run resumed from its checkpoint computes exactly what an
uninterrupted one does.
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
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from promptgen.storage.cache import FeatureCache
from promptgen.toolkit import (ConfigError, integer, load_training_state, number, save_training_state,
                               warmup_cosine)
from promptgen_digits import glyphs, world
from promptgen_digits.backbone import MODEL_NAME, TinyClipDigits, add_model_config
from promptgen_digits.pool import PretrainPool
from promptgen_digits.pretrain import clip_loss, clip_optimizer

CHECKPOINT = "lit-checkpoint.safetensors"
# What checkpoints were before: a pickle, never opened now (loading one could run code); its presence is named.
OLD_CHECKPOINT = "lit-checkpoint.pt"


@attrs.frozen
class LitConfig:
    steps: int = attrs.field(default=600, validator=integer(1))
    batch_size: int = attrs.field(default=256, validator=integer(2))
    lr: float = attrs.field(default=1e-3, validator=number(0.0, inclusive=False))
    warmup_steps: int = attrs.field(default=50, validator=integer(0))
    weight_decay: float = attrs.field(default=0.1, validator=number(0.0))
    seed: int = attrs.field(default=0, validator=integer(0))
    pool_size: int = attrs.field(default=30_000, validator=integer(2))
    pool_seed: int = attrs.field(default=0, validator=integer(0))  # apart from `seed`: trials share one pool
    captions: str = attrs.field(default="web", validator=attrs.validators.in_(tuple(world.CAPTION_RECIPES)))
    checkpoint_every: int = attrs.field(default=50, validator=integer(1))

    def __attrs_post_init__(self):
        if self.batch_size > self.pool_size:
            raise ConfigError(f"world pretrain --text-only: batch size {self.batch_size} exceeds the pool of "
                              f"{self.pool_size} images")


def pool_features(locked: TinyClipDigits, pool: PretrainPool, cache_dir, progress: bool) -> torch.Tensor:
    """The locked image tower's features of every pool image [N, E], computed once into the feature cache."""
    with FeatureCache(cache_dir) as cache:
        features = cache.get(locked, pool, pool.name, pool.all_samples(), progress=progress, batch_size=512)
    return F.normalize(features.features, dim=-1)


def step_batch(config: LitConfig, step: int, pool: PretrainPool) -> tuple[np.ndarray, list[str]]:
    """The pool indices and captions of one step: a function of (seed, step) alone."""
    rng = np.random.default_rng([config.seed, 13, step])
    indices = rng.choice(len(pool), config.batch_size, replace=False)
    caption = world.CAPTION_RECIPES[config.captions]
    meta = pool.metadata()
    captions = [caption(int(meta["label"][i]), world.PRETRAIN_STYLES[meta["style"][i]],
                        glyphs.PRETRAIN_FONTS[meta["font"][i]], rng) for i in indices]
    return indices, captions


def student_model(locked: TinyClipDigits, seed: int):
    """A backbone whose image tower is the locked one and whose text tower is random (seeded)."""
    from promptgen_openclip.backbone import OpenClipBackbone

    add_model_config()
    student = OpenClipBackbone(MODEL_NAME, device="cpu", precision="fp32",
                               options=OpenClipBackbone.Options(init_seed=seed))
    student.model.visual.load_state_dict(locked.model.visual.state_dict())
    student.model.visual.requires_grad_(False)
    return student


def text_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if not n.startswith("visual.")]


def make_optimizer(model, config: LitConfig) -> torch.optim.AdamW:
    """The first edition's optimizer over the text tower (and temperature) alone."""
    named = text_parameters(model)
    for _, p in named:
        p.requires_grad_(True)
    return clip_optimizer(named, config.lr, config.weight_decay)


def train_text_tower(config: LitConfig, out_dir: Path, *, image_weights: Path | None = None, cache_dir=None,
                     progress: bool = True, stop_after: int | None = None) -> dict | None:
    """Train the text tower; write ``tiny-clip-digits.safetensors`` (fp16) to ``out_dir`` and return the facts.

    A checkpoint (``lit-checkpoint.safetensors`` in ``out_dir``, no pickle) is written every ``checkpoint_every``
    steps and the run resumes from it when one of the same config is there. ``stop_after``: stop once that many
    steps are done (checkpointed), as an interruption would; returns None then.
    """
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    locked = TinyClipDigits(pretrained=str(image_weights) if image_weights else None, device="cpu")
    pool = PretrainPool(seed=config.pool_seed, size=config.pool_size, cache_dir=cache_dir)
    image_features = pool_features(locked, pool, cache_dir, progress)
    features_s = time.perf_counter() - start
    torch.manual_seed(config.seed)
    student = student_model(locked, config.seed)
    model = student.model.train()
    optimizer = make_optimizer(model, config)
    first, losses, elapsed = 0, [], 0.0
    checkpoint = out_dir / CHECKPOINT
    if (out_dir / OLD_CHECKPOINT).exists() and progress:
        print(f"note: {out_dir / OLD_CHECKPOINT} is a checkpoint of an older promptgen (a pickle); it is not read "
              f"(loading a pickle could run code), so this run starts afresh: delete it", file=sys.stderr)
    if checkpoint.exists():
        def same_run(saved: dict) -> None:
            if saved["config"] != attrs.asdict(config) or saved["image_tower"] != locked.image_fingerprint:
                raise ConfigError(f"{checkpoint} belongs to another run (config or image tower differ): delete it "
                                  f"to start afresh, or run the command that wrote it")

        saved = load_training_state(checkpoint, model=model, optimizer=optimizer, accept=same_run)
        first, losses, elapsed = saved["step"], saved["losses"], saved["elapsed_s"]
        if progress:
            print(f"resuming from {checkpoint} at step {first} of {config.steps}", file=sys.stderr)
    last = config.steps if stop_after is None else min(config.steps, stop_after)
    bar = tqdm(range(first, last), initial=first, total=config.steps, desc="LiT text tower", unit="step",
               disable=not progress)
    train_start = time.perf_counter()
    for step in bar:
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, config.steps, config.warmup_steps, config.lr)
        indices, captions = step_batch(config, step, pool)
        tokens = student.tokenize(captions)
        text = student.encode_prompts(student.embed_tokens(tokens.ids), tokens.eot_index)
        loss = clip_loss(image_features[torch.from_numpy(indices)], text, model.logit_scale.exp().clamp(max=100),
                         captions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        done = step + 1
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        if done % config.checkpoint_every == 0 or done == last:
            save_training_state(checkpoint, model=model, optimizer=optimizer, meta={
                "config": attrs.asdict(config), "image_tower": locked.image_fingerprint, "step": done,
                "losses": losses, "elapsed_s": elapsed + time.perf_counter() - train_start})
    if last < config.steps:
        return None
    elapsed += time.perf_counter() - train_start
    weights = out_dir / f"{MODEL_NAME}.safetensors"
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, weights)
    checkpoint.unlink()
    return {
        "config": attrs.asdict(config),
        "locked_image_tower": {"weights": str(image_weights) if image_weights else "the shipped tiny-clip-digits",
                               "image_fingerprint": locked.image_fingerprint},
        "pool": {"images": len(pool), "seed": config.pool_seed, "recipe": "the first edition's pretraining distribution"},
        "device": "cpu",
        "wall_time_s": round(time.perf_counter() - start, 1),
        "pool_features_s": round(features_s, 1),
        "train_s": round(elapsed, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "weights": weights.name,
        "weights_mb": round(weights.stat().st_size / 2**20, 2),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


def same_image_tower(weights: Path, locked_weights: Path) -> bool:
    """Whether two weight files hold the same image tower (the LiT output keeps the locked one exactly)."""
    a, b = load_file(weights), load_file(locked_weights)
    names = [n for n in a if n.startswith("visual.")]
    return names == [n for n in b if n.startswith("visual.")] and all(torch.equal(a[n], b[n]) for n in names)
