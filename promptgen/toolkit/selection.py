"""Best-epoch selection: the one rule every training loop keeps its epoch by.

Higher is better. Of two equal scores the **earlier** epoch is kept, as the official code does
(Dassl's ``is_best = curr_result > self.best_result``, which CoOp, SPG and DPSPG train through). A
NaN score (no validation split to judge on) replaces the kept epoch, so a loop without validation
keeps its last epoch. Epochs before ``select_from`` are not candidates (DPSPG's LATE).
"""

from __future__ import annotations

import copy
from typing import Any, Callable


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
