"""Learning-rate schedules shared by the trainers: warm-up, then cosine decay to zero."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total: int, warmup: int, peak: float, warmup_lr: float | None = None) -> float:
    """The rate at ``step`` of ``total`` (epochs or steps, whichever the caller counts).

    Warm-up for the first ``warmup`` steps: linear up to ``peak`` or, with ``warmup_lr``, constant at
    that value (CoOp's 'constant' warm-up); then cosine from ``peak`` down to 0 over the rest.
    """
    if step < warmup:
        return warmup_lr if warmup_lr is not None else peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
