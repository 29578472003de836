"""The loop prompt learners share: learn one context [n_ctx, D] for all images on cached features.

CoOp's schedule (the official config SPG's stage I uses): SGD with momentum, a constant warm-up at
``warmup_lr`` for ``warmup_epochs``, then cosine decay per epoch; after each epoch the context is
scored on the val features (else the train features) and the best epoch is kept, ties going to the
later epoch (a run whose score plateaus at its initialisation must not be pinned there). A learner
supplies the loss on cosine logits and the score; everything else, including the per-epoch history
(train loss and val score) and a progress bar by step, is here once.
"""

from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from promptgen.evaluate import prompt_logits
from promptgen.prompts import PromptAssembler
from promptgen.schedules import warmup_cosine
from promptgen.values import FeatureSet

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits [B, C], labels [B]) -> scalar
Score = Callable[[torch.Tensor, torch.Tensor], float]  # (logits [N, C], labels [N]) -> higher is better


def fit_context(backbone, class_names, train: FeatureSet, val: FeatureSet | None, initial: torch.Tensor, *,
                loss: Loss, score: Score, epochs: int, batch_size: int, lr: float, warmup_epochs: int,
                warmup_lr: float, momentum: float, weight_decay: float, seed: int, progress: bool,
                desc: str) -> dict:
    """Returns {"ctx", "score", "best_epoch", "selected_on", "history"} (ctx on the CPU)."""
    ctx = torch.nn.Parameter(initial.clone().to(backbone.device))
    assembler = PromptAssembler(backbone, class_names, ctx.shape[0])
    optimizer = torch.optim.SGD([ctx], lr=lr, momentum=momentum, weight_decay=weight_decay)
    shuffle = torch.Generator().manual_seed(seed)
    selection = val if val is not None and len(val) else train
    steps = -(-len(train) // batch_size)
    best = {"score": float("-inf"), "ctx": ctx.detach().clone(), "epoch": -1}
    history = []
    bar = tqdm(total=epochs * steps, desc=desc, unit="step", disable=not progress, leave=False)
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(epoch, epochs, warmup_epochs, lr, warmup_lr)
        order = torch.randperm(len(train), generator=shuffle)
        losses = []
        for start in range(0, len(train), batch_size):
            index = order[start:start + batch_size]
            features = train.features[index].to(backbone.device)
            text = assembler.text_features(backbone, ctx)
            value = loss(backbone.logit_scale * features @ text.T, train.labels[index].to(backbone.device))
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            losses.append(value.item())
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{value.item():.3f}")
        result = score(prompt_logits(backbone, assembler, ctx.detach(), selection.features), selection.labels)
        history.append({"epoch": epoch, "train_loss": sum(losses) / max(1, len(losses)), "val_score": result,
                        "lr": optimizer.param_groups[0]["lr"]})
        if result >= best["score"]:
            best = {"score": result, "ctx": ctx.detach().clone(), "epoch": epoch}
    bar.close()
    return {"ctx": best["ctx"].cpu(), "score": best["score"], "best_epoch": best["epoch"],
            "selected_on": "val" if selection is val else "train", "history": history}
