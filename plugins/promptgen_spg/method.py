"""SPG (Bai et al., ECCV 2024): soft prompt generation for domain generalization.

Stage I: one prompt label per source domain, each learned by a prompt learner (CoOp) on that
domain alone. Stage II: a generator learns to map an image feature (plus noise) to the prompt label
of the image's domain. Test: each image gets its own generated prompt, encoded around every class.
Any registered generator can be stage II (``spg-<generator>``); any prompt learner stage I.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import attrs
import torch

from promptgen.toolkit import (
    check_fit_report, drawn_prompts, instance_logits, load_labels_and_generator, option, per_draw, prompt_quality,
    PromptAssembler, save_labels_and_generator,
)

LABELS = "prompt_labels"
GENERATOR = "generator"


class SPG:
    """SPG: a prompt label per source domain (stage I), a generator from image feature to prompt (stage II)."""

    inputs = "features"  # its table rank is set where it is registered (promptgen_spg)

    @attrs.frozen(kw_only=True)
    class Options:
        generator: Annotated[str, option("the stage II generator (SPG: cgan)", component="generator")]
        learner: Annotated[str, option("the stage I prompt learner of the per-domain prompt labels",
                                       component="prompt_learner")] = "spg-coop"

    def __init__(self, options: Options):
        self.options = options
        self.generator_name = options.generator  # the generator a loaded run was saved with, after load
        self.labels = []
        self.generator = None
        self.generator_options: dict = {}

    def components(self):
        return (("prompt_learner", self.options.learner), ("generator", self.generator_name))

    def fit(self, run) -> dict:
        with run.timed("stage1"):
            self.labels = run.prompt_labels(self.options.learner)
        arguments = {"feature_dim": run.backbone.embed_dim, "n_ctx": self.labels[0].n_ctx,
                     "ctx_dim": run.backbone.ctx_dim}
        self.generator = run.create("generator", self.generator_name, **arguments)
        self.generator_options = {**arguments, **run.options("generator", self.generator_name)}
        train, val = run.features("train"), run.features("val")
        with run.timed("stage2"):
            report = self.generator.fit(run.backbone, train, self.labels, val)
        report = check_fit_report(report, run.registry.get("generator", self.generator_name).where)
        # the generator's per-epoch "history" is the run's (history.json, curves.png: stage II's curves)
        return {**report, "stage1": {label.domain: label.metadata for label in self.labels}}

    @torch.no_grad()
    def logits(self, run, split: str, draws: int | None = None) -> torch.Tensor:
        """[N, C]; with ``draws``: [draws, N, C], one noise draw each (promptgen.toolkit.evaluate.per_draw)."""
        assembler = PromptAssembler(run.backbone, run.classes, self.labels[0].n_ctx)
        return per_draw(lambda features: instance_logits(run.backbone, assembler, self.generator, features,
                                                         name=self.generator_name),
                        run.features(split).features, draws)

    @torch.no_grad()
    def instance_prompts(self, run, split: str, draws: int | None = None) -> torch.Tensor:
        """The prompt [N, n_ctx, D] each image of ``split`` gets; with ``draws``: [draws, N, n_ctx, D]."""
        label = self.labels[0]
        return drawn_prompts(self.generator, run.features(split).features, label.n_ctx, label.ctx_dim,
                             self.generator_name, draws, run.backbone.device)

    def prompt_labels(self) -> list:
        """Stage I's prompt labels, one per source domain (what ``promptgen inspect`` compares prompts with)."""
        return list(self.labels)

    def quality(self, run) -> dict:
        return prompt_quality(run.backbone, self.generator, self.labels, run.features("val"),
                              name=self.generator_name)

    def save(self, directory: Path) -> None:
        save_labels_and_generator(directory, self.labels, self.generator, self.generator_name, self.generator_options,
                                  labels_dir=LABELS, generator_dir=GENERATOR)

    def load(self, directory: Path, run) -> None:
        self.labels, self.generator, self.generator_name, self.generator_options = load_labels_and_generator(
            directory, run, labels_dir=LABELS, generator_dir=GENERATOR)
