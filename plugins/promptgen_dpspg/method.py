"""DPSPG's dual path as a method: SPG's positive path (prompt labels, a generator, instance-specific prompts)
plus a negative one (negative prompt labels, a second generator), scored as positive - alpha * negative.

``dpspg`` is the published recipe (the transformer generator on both paths), ``dpspg-positive`` its
positive path alone, and ``spg-<generator>+neg`` the negative path added to any registered
generator: the table then shows which part of DPSPG does the work. Built only on what promptgen
exposes to plugins: stage I through ``run.prompt_labels``, generators through ``run.create``, the
epoch loop of ``promptgen.training`` (with the method's own selection score for the negative path),
instance-specific inference from ``promptgen.evaluate``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from promptgen.checkpoints import check_fingerprint, load_generator, load_prompt_label, save_generator, \
    save_prompt_label
from promptgen.errors import ConfigError, PromptgenError
from promptgen.evaluate import accuracy, drawn_prompts, instance_logits, per_draw
from promptgen.prompts import PromptAssembler
from promptgen.protocols import check_fit_report
from promptgen.training import train_epochs

PATHS = ("positive", "negative")


class DualPath:
    """Positive and negative generated prompts; logits = positive - alpha * negative (alpha = 0.2 in DPSPG)."""

    inputs = "features"
    rank = 90

    def __init__(self, generator: str = "transformer", learner: str = "coop", negative_learner: str = "negative-coop",
                 alpha: float = 0.2, negative: bool = True):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be a number in [0, 1] (DPSPG uses 0.2), got {alpha!r}")
        self.generator_name, self.learner, self.negative_learner = generator, learner, negative_learner
        self.alpha, self.negative = float(alpha), bool(negative)
        self.labels: dict[str, list] = {}
        self.generators: dict[str, object] = {}
        self.generator_options: dict[str, dict] = {}

    def components(self):
        parts = [("prompt_learner", self.learner), ("generator", self.generator_name)]
        return parts + ([("prompt_learner", self.negative_learner)] if self.negative else [])

    @property
    def paths(self) -> tuple[str, ...]:
        return PATHS if self.negative else PATHS[:1]

    # --- training ------------------------------------------------------------------------------------

    def fit(self, run) -> dict:
        with run.timed("stage1"):
            self.labels["positive"] = run.prompt_labels(self.learner)
            if self.negative:
                self.labels["negative"] = run.prompt_labels(self.negative_learner)
        train, val = run.features("train"), run.features("val")
        report = {}
        with run.timed("stage2"):
            for path in self.paths:
                labels = self.labels[path]
                arguments = {"feature_dim": run.backbone.embed_dim, "n_ctx": labels[0].n_ctx,
                             "ctx_dim": run.backbone.ctx_dim}
                generator = run.create("generator", self.generator_name, **arguments)
                self.generators[path] = generator
                self.generator_options[path] = {**arguments, **run.options("generator", self.generator_name)}
                if path == "positive":
                    fitted = generator.fit(run.backbone, train, labels, val)
                else:
                    fitted = self._fit_negative(run, generator, train, labels, val)
                report[path] = dict(check_fit_report(fitted, run.registry.get("generator", self.generator_name).where))
        history = [{"path": path, **row} for path in self.paths for row in report[path].pop("history", None) or []]
        stage1 = {path: {label.domain: {k: v for k, v in label.metadata.items() if k != "history"}
                         for label in self.labels[path]} for path in self.paths}
        return {**report, "stage1": stage1, "history": history}

    def _fit_negative(self, run, generator, train, labels, val) -> dict:
        """The negative generator's epochs are judged by what the method predicts with it: the val accuracy
        of positive - alpha * negative (the DPSPG code selects both paths on that score)."""
        if not hasattr(generator, "trainer") or not len(val):
            return generator.fit(run.backbone, train, labels, val)
        positive = self._path_logits(run, "positive", val.features)

        def score() -> float:
            return accuracy(positive - self.alpha * self._logits_of(run, generator, labels[0].n_ctx, val.features),
                            val.labels)

        o = getattr(generator, "options", {})
        try:
            schedule = {key: o[key] for key in ("epochs", "batch_size", "lr", "warmup_epochs", "seed")}
        except KeyError:  # a generator without promptgen's schedule options trains its own way
            return generator.fit(run.backbone, train, labels, val)
        return train_epochs(generator, run.backbone, train, labels, val, name=f"{self.generator_name} (negative)",
                            trainer=generator.trainer(run.backbone, train, labels), score=score,
                            progress=getattr(generator, "progress", run.progress), **schedule)

    # --- prediction ----------------------------------------------------------------------------------

    def _logits_of(self, run, generator, n_ctx: int, features: torch.Tensor) -> torch.Tensor:
        assembler = PromptAssembler(run.backbone, run.classes, n_ctx)
        return instance_logits(run.backbone, assembler, generator, features, name=self.generator_name)

    def _path_logits(self, run, path: str, features: torch.Tensor) -> torch.Tensor:
        return self._logits_of(run, self.generators[path], self.labels[path][0].n_ctx, features)

    @torch.no_grad()
    def logits(self, run, split: str, draws: int | None = None) -> torch.Tensor:
        """[N, C]; with ``draws``: [draws, N, C], one noise draw of each path each (promptgen.evaluate.per_draw)."""
        def score(features):
            scores = self._path_logits(run, "positive", features)
            if self.negative:
                scores = scores - self.alpha * self._path_logits(run, "negative", features)
            return scores

        return per_draw(score, run.features(split).features, draws)

    @torch.no_grad()
    def instance_prompts(self, run, split: str, draws: int | None = None) -> torch.Tensor:
        """The positive path's prompt [N, n_ctx, D] for each image of ``split`` ([draws, N, ...] with ``draws``):
        the prompt an image is read with (the negative path's is a correction subtracted from it)."""
        label = self.labels["positive"][0]
        return drawn_prompts(self.generators["positive"], run.features(split).features, label.n_ctx, label.ctx_dim,
                             self.generator_name, draws, run.backbone.device)

    # --- files ---------------------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        for path in self.paths:
            for label in self.labels[path]:
                save_prompt_label(label, Path(directory) / f"prompt_labels_{path}" / label.domain)
            save_generator(self.generators[path], self.generator_name, self.generator_options[path],
                           Path(directory) / f"generator_{path}")

    def load(self, directory: Path, run) -> None:
        directory = Path(directory)
        for path in self.paths:
            folder = directory / f"prompt_labels_{path}"
            if not folder.is_dir():
                raise PromptgenError(f"{directory}: no {path} prompt labels ({folder.name}/): this run was not "
                                     f"saved by a method with a {path} path")
            self.labels[path] = [load_prompt_label(folder / domain) for domain in run.sources]
            for label, domain in zip(self.labels[path], run.sources):
                check_fingerprint(label, run.backbone, folder / domain)
            self.generators[path], _, self.generator_options[path] = load_generator(
                directory / f"generator_{path}", run.registry)
