"""Learning-rate schedules shared by the trainers, and the check that refuses a schedule that is all warm-up.

- :func:`dassl_lr`: the official one (Dassl's, which CoOp, SPG and DPSPG use): stepped once per epoch,
  a constant or linear warm-up, then cosine with T_max = the number of epochs counted from the end of
  the warm-up, so it ends above zero (0.8 % of the peak at 70 epochs with 4 of warm-up).
- :func:`warmup_cosine`: promptgen's per-step schedule (the generators' ``schedule = "step"``):
  linear warm-up, then cosine down to zero at the last step.
"""

from __future__ import annotations

import math

from promptgen.errors import ConfigError


def warmup_cosine(step: int, total: int, warmup: int, peak: float, warmup_lr: float | None = None) -> float:
    """The rate at ``step`` of ``total`` (epochs or steps, whichever the caller counts).

    Warm-up for the first ``warmup`` steps: linear up to ``peak`` or, with ``warmup_lr``, constant at
    that value (CoOp's 'constant' warm-up); then cosine from ``peak`` down to 0 over the rest.
    """
    if step < warmup:
        return warmup_lr if warmup_lr is not None else peak * (step + 1) / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


WARMUPS = ("constant", "linear")


def dassl_lr(epoch: int, epochs: int, warmup: int, peak: float, warmup_type: str = "constant",
             warmup_lr: float = 1e-5) -> float:
    """The rate during ``epoch`` (0-based) under Dassl's scheduler (``dassl/optim/lr_scheduler.py:58-80,128-147``,
    ``WARMUP_RECOUNT`` true): a ``constant`` warm-up at ``warmup_lr``, or a ``linear`` one from ``warmup_lr`` at
    epoch 0 to ``peak * epoch / warmup``; from epoch ``warmup`` on, ``CosineAnnealingLR(T_max=epochs)``
    restarted there: ``peak/2 * (1 + cos(pi * (epoch - warmup) / epochs))``."""
    if epoch < warmup:
        if warmup_type == "constant" or epoch == 0:
            return warmup_lr
        return peak * epoch / warmup
    return 0.5 * peak * (1 + math.cos(math.pi * (epoch - warmup) / epochs))


def check_warmup(component: str, values: dict) -> None:
    """Refuse a schedule that is warm-up and nothing else: ``epochs`` not more than ``warmup_epochs``.

    Generic over the option names every built-in trainer uses (``epochs``, ``warmup_epochs``, and
    ``warmup_lr`` for a constant warm-up, else a linear one up to ``lr``): the run would end before the
    learning rate reached its schedule (CoOp's one warm-up epoch at 1e-5 would be the whole run), so it
    fails before anything trains, naming ``component`` (the section its options are set under).
    """
    epochs, warmup = values.get("epochs"), values.get("warmup_epochs")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epochs, warmup)) or not 0 < epochs <= warmup:
        return
    if isinstance(values.get("warmup_lr"), (int, float)):
        how = f" at {values['warmup_lr']:g}"
    elif isinstance(values.get("lr"), (int, float)):
        how = f", the learning rate still rising to {values['lr']:g}"
    else:
        how = ""
    raise ConfigError(f"{component}: epochs={epochs} is not more than warmup_epochs={warmup}: the whole run would be "
                      f"warm-up{how}; set {component}.warmup_epochs=0 or more epochs")
