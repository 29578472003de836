"""Best-epoch selection: the one rule every training loop keeps its epoch by.

Higher is better. Of two equal scores the **earlier** epoch is kept, as the official code does
(Dassl's ``is_best = curr_result > self.best_result``, which CoOp, SPG and DPSPG train through). A
NaN score (no validation split to judge on) replaces the kept epoch, so a loop without validation
keeps its last epoch. Epochs before ``select_from`` are not candidates (DPSPG's LATE).

Below the rule: the watch through which every loop reports its epochs to a sweep's model selection.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from typing import Any, Callable, Iterator, Sequence


class BestEpoch:
    def __init__(self, select_from: int = 0):
        self.select_from = select_from
        self.epoch, self.score, self.state = -1, float("nan"), None

    def offer(self, epoch: int, score: float, state: Callable[[], Any]) -> bool:
        """Keep ``state()`` (a copy is taken) when ``epoch`` is a candidate and beats the kept one; say whether."""
        if epoch < self.select_from or (self.state is not None and score <= self.score):
            return False
        self.epoch, self.score, self.state = epoch, score, copy.deepcopy(state())
        return True

    def report(self) -> dict:
        """What a loop reports of its selection: ``{"best_epoch", "best_score"}`` (the same names everywhere)."""
        return {"best_epoch": self.epoch, "best_score": self.score}


# --- what a sweep's model selection reads: every epoch's scores on the held-out domain too ---------------------------
#
# A sweep that selects models the DomainBed way (benchmarks/selection.py) needs more than the epoch a loop kept:
# the accuracy on the held-out domain's validation split and on its test split at every epoch (the oracle reads
# the last epoch's; leave-one-domain-out compares epochs across runs). A run that records checkpoints
# (RunConfig.checkpoints) opens a Watch around its method's fit (the engine); every loop that selects epochs
# reports each epoch to it with a way to score any split with the model as it is now. With no open watch a report
# costs nothing. Scoring runs under a forked RNG and without gradients, so watching never changes what is trained.

_WATCH: contextvars.ContextVar["Watch | None"] = contextvars.ContextVar("promptgen_watch", default=None)


class Watch:
    """The checkpoints of one run's fit: ``loops``, one ``{"loop", "checkpoints"}`` per loop, in the order they
    ran; each checkpoint ``{"epoch", "val", "candidate", <split>: accuracy, ...}`` for the watched ``splits``."""

    def __init__(self, context, splits: Sequence[str]):
        self.context, self.splits = context, tuple(splits)
        self.loops: list[dict] = []

    def add(self, loop: str, checkpoint: dict) -> None:
        if not self.loops or self.loops[-1]["loop"] != loop or checkpoint["epoch"] == 0:
            self.loops.append({"loop": loop, "checkpoints": []})
        self.loops[-1]["checkpoints"].append(checkpoint)


@contextlib.contextmanager
def watching(context, splits: Sequence[str]) -> Iterator[Watch]:
    """Record every loop's epochs during the block (the engine opens it around ``fit``); ``context`` is the
    RunContext whose ``features(split)`` and ``timed`` the scoring uses."""
    watch = Watch(context, splits)
    token = _WATCH.set(watch)
    try:
        yield watch
    finally:
        _WATCH.reset(token)


def report_epoch(loop: str, epoch: int, val: float, *, features: Callable[[Any], float] | None = None,
                 split: Callable[[str], float] | None = None, candidate: bool = True) -> None:
    """Tell an open watch (if any) about epoch ``epoch`` of ``loop`` (its own validation score ``val``): it scores
    its splits with ``features(FeatureSet)`` (loops on cached features) or ``split(name)`` (loops on images, which
    score a run split by name). ``candidate``: whether the loop may keep this epoch (DPSPG's LATE: not before it)."""
    if (features is None) == (split is None):
        raise ValueError(f"report_epoch({loop!r}): give one of features= (a FeatureSet's accuracy) or split= (a "
                         f"split name's accuracy)")
    watch = _WATCH.get()
    if watch is None:
        return
    import torch

    from promptgen.toolkit.device import cuda_devices

    with watch.context.timed("checkpoints"), torch.random.fork_rng(devices=cuda_devices()), torch.no_grad():
        scores = {name: float(features(watch.context.features(name)) if features is not None else split(name))
                  for name in watch.splits}
    watch.add(loop, {"epoch": epoch, "val": val, "candidate": candidate, **scores})
