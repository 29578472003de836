"""How far prompts lie from a run's stage I prompt labels: RMS per prompt entry, read against a label entry's own
size. Every run records it (``distance_to_labels``: metrics.json's prompt_distance); ``promptgen inspect``
(promptgen.runs.inspect) measures with the same yardstick."""

from __future__ import annotations

import torch


def rms(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root-mean-square difference per prompt entry between prompts [..., n_ctx, D] (broadcast)."""
    return (a - b).pow(2).flatten(-2).mean(-1).sqrt()


def label_stack(labels) -> torch.Tensor:
    """The labels' contexts as one tensor [K, n_ctx, D] on the CPU."""
    return torch.stack([label.ctx.detach().float().cpu() for label in labels])


def label_rms(stack: torch.Tensor) -> float:
    """A label entry's RMS size, averaged over the labels: the yardstick distances are read against."""
    return stack.pow(2).flatten(1).mean(1).sqrt().mean().item()



def distance_to_labels(method, run, split: str = "val") -> dict | None:
    """How far a trained method's generated prompts lie from its stage I labels, on ``split`` (the sources' val):
    the mean RMS distance to the nearest label beside a label entry's own RMS size. Cheap (no text is encoded),
    so every run records it; None for a method without prompt labels and generated prompts. A ratio above 1
    says the generator did not reach its labels (``promptgen inspect`` then says where accuracy goes)."""
    labels_of, prompts_of = getattr(method, "prompt_labels", None), getattr(method, "instance_prompts", None)
    if labels_of is None or prompts_of is None:
        return None
    with torch.random.fork_rng(devices=[]):  # sampling noise must not move the run's random state
        prompts = prompts_of(run, split).float().cpu()
    stack = label_stack(labels_of())
    nearest = rms(prompts[:, None], stack[None]).min(dim=1).values.mean().item()
    scale = label_rms(stack)
    return {"split": split, "to_nearest_label": nearest, "label_rms": scale,
            "ratio": nearest / scale if scale > 0 else float("inf")}
