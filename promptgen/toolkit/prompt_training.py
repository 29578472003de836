"""The loop that prompt learning shares: SGD on a few prompt parameters with CoOp's schedule, the best epoch kept.

CoOp's schedule (the official config SPG's stage I and its baselines use): SGD with momentum, a
constant warm-up at ``warmup_lr`` for ``warmup_epochs``, then Dassl's per-epoch cosine
(promptgen.toolkit.lr_schedules.dassl_lr). After each epoch the prompts are scored (on the source val split)
and the best epoch is kept by the one rule every loop shares (promptgen.toolkit.best_epoch: of two equal
scores the earlier, as the official code). The caller supplies the batches, the loss of one batch and the
score; the per-epoch history (train loss, score, learning rate) and a progress bar by step are here
once. :func:`fit_context` is the loop for one shared context on cached features (CoOp-style prompt
learners), its batches from promptgen.toolkit.epochs (one view of every image per epoch).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from promptgen.toolkit.evaluate import prompt_logits
from promptgen.toolkit.prompts import PromptAssembler
from promptgen.toolkit.epochs import Epochs
from promptgen.toolkit.best_epoch import BestEpoch, report_epoch
from promptgen.toolkit.lr_schedules import dassl_lr
from promptgen.values import FeatureSet

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits [B, C], labels [B]) -> scalar
Score = Callable[[torch.Tensor, torch.Tensor], float]  # (logits [N, C], labels [N]) -> higher is better


def train_prompts(module: torch.nn.Module, *, batches: Callable[[], Iterable[Any]], steps: int,
                  loss: Callable[[Any], torch.Tensor], score: Callable[[], float], epochs: int, lr: float,
                  warmup_epochs: int, warmup_lr: float, momentum: float, weight_decay: float, progress: bool,
                  desc: str, score_name: str = "val_accuracy",
                  score_features: Callable[[FeatureSet], float] | None = None,
                  score_split: Callable[[str], float] | None = None) -> dict:
    """Train ``module``'s parameters; leave it in its best epoch's state (eval mode).

    batches() gives one epoch's batches (``steps`` of them); loss(batch) their loss; score() the
    epoch's score. Returns {"best_epoch", "best_score", "history", "steps"} (steps: optimizer steps taken).
    score_features(FeatureSet) or score_split(split name): the same judgement of any split, for a sweep's model
    selection (each epoch is reported to an open watch: promptgen.toolkit.best_epoch); a loop given neither is
    not watched.
    """
    optimizer = torch.optim.SGD(module.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    best = BestEpoch()
    history, taken = [], 0
    bar = tqdm(total=epochs * steps, desc=desc, unit="step", disable=not progress, leave=False)
    for epoch in range(epochs):
        for group in optimizer.param_groups:
            group["lr"] = dassl_lr(epoch, epochs, warmup_epochs, lr, "constant", warmup_lr)
        module.train()
        losses = []
        for batch in batches():
            value = loss(batch)
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            losses.append(value.item())
            taken += 1
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{value.item():.3f}")
        module.eval()
        with torch.no_grad():
            result = score()
        history.append({"epoch": epoch, "train_loss": sum(losses) / max(1, len(losses)), score_name: result,
                        "lr": optimizer.param_groups[0]["lr"]})
        if score_features is not None or score_split is not None:
            report_epoch(desc, epoch, result, features=score_features, split=score_split)
        best.offer(epoch, result, module.state_dict)
    bar.close()
    module.load_state_dict(best.state)
    module.eval()
    return {**best.report(), "history": history, "steps": taken}


class _Context(torch.nn.Module):
    def __init__(self, ctx: torch.Tensor):
        super().__init__()
        self.ctx = torch.nn.Parameter(ctx)


def fit_context(backbone, class_names, train: FeatureSet, val: FeatureSet | None, initial: torch.Tensor, *,
                loss: Loss, score: Score, epochs: int, batch_size: int, lr: float, warmup_epochs: int,
                warmup_lr: float, momentum: float, weight_decay: float, seed: int, progress: bool,
                desc: str, score_name: str = "val_accuracy") -> dict:
    """One context [n_ctx, D] for every image, from cached features: {"ctx", "best_score", "best_epoch",
    "selected_on", "history"} (ctx on the CPU). Scored on ``val``, else on ``train``."""
    context = _Context(initial.clone().to(backbone.device))
    assembler = PromptAssembler(backbone, class_names, initial.shape[0])
    selection = val if val is not None and len(val) else train
    epochs_of = Epochs(train, batch_size, torch.Generator().manual_seed(seed))

    def batch_loss(index):
        text = assembler.text_features(backbone, context.ctx)
        features = train.features[index].to(backbone.device)
        return loss(backbone.logit_scale * features @ text.T, train.labels[index].to(backbone.device))

    def score_of(features: FeatureSet) -> float:
        return score(prompt_logits(backbone, assembler, context.ctx.detach(), features.features), features.labels)

    result = train_prompts(context, batches=epochs_of.next, steps=epochs_of.steps, loss=batch_loss,
                           score=lambda: score_of(selection), score_features=score_of,
                           epochs=epochs, lr=lr, warmup_epochs=warmup_epochs, warmup_lr=warmup_lr,
                           momentum=momentum, weight_decay=weight_decay, progress=progress, desc=desc,
                           score_name=score_name)
    return {**result, "ctx": context.ctx.detach().cpu(), "selected_on": "val" if selection is val else "train"}
