"""Building blocks for method plugins: the parts most prompt-learning methods share.

:class:`SharedPromptMethod` is a whole method: one prompt for every image, learned by a prompt
learner on the source domains pooled (CoOp is this with the ``coop`` learner). Method plugins
subclass it or compose the helpers below; nothing here names a plugin.
"""

from __future__ import annotations

from pathlib import Path

import torch

from promptgen.toolkit.checkpoints import check_fingerprint, load_prompt_label, save_prompt_label
from promptgen.toolkit.evaluate import prompt_logits
from promptgen.toolkit.prompts import PromptAssembler


class SharedPromptMethod:
    """One prompt for every image, learned by a prompt learner on the source domains pooled."""

    inputs = "features"
    label_file = "prompt_label"

    def __init__(self, learner: str):
        self.learner = learner
        self.label = None

    def components(self):
        return (("prompt_learner", self.learner),)

    def fit(self, run) -> dict:
        with run.timed("stage1"):
            learner = run.create("prompt_learner", self.learner)
            self.label = learner.fit(run.backbone, run.classes, run.features("train"), run.features("val"),
                                     "+".join(run.sources))
        metadata = self.label.metadata
        # best_epoch beside the history, as every loop that predicts reports it: with the history's last epoch it
        # tells a table whether the schedule ended while the source val was still rising (benchmarks.sweep)
        return {"stage1": {key: value for key, value in metadata.items() if key != "history"},
                **({"history": metadata["history"]} if "history" in metadata else {}),
                **({"best_epoch": metadata["best_epoch"]} if "best_epoch" in metadata else {})}

    @torch.no_grad()
    def logits(self, run, split: str) -> torch.Tensor:
        assembler = PromptAssembler(run.backbone, self.label.class_names, self.label.n_ctx)
        return prompt_logits(run.backbone, assembler, self.label.ctx, run.features(split).features).cpu()

    def save(self, directory: Path) -> None:
        save_prompt_label(self.label, Path(directory) / self.label_file)

    def load(self, directory: Path, run) -> None:
        path = Path(directory) / self.label_file
        self.label = load_prompt_label(path)
        check_fingerprint(self.label, run.backbone, path)
