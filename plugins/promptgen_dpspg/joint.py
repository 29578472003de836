"""DPSPG's stage I as the official code runs it: a domain's positive and negative contexts learned in one loop.

The DPSPG code (trainers/dpspg_coop.py, one run per source domain) holds both contexts in one prompt
learner (``pos_ctx``, ``neg_ctx``: lines 43-44) under one SGD optimizer (199-201). Each step scores the
batch with both (148-151) and minimises the sum (229) of CoOp's cross-entropy on the positive logits
(221) and the negative path's BCE with logits against the complementary labels, pos_weight C - 1
(223-227; here :meth:`promptgen_dpspg.negative.NegativeCoOp.loss`). After each epoch the *pair* is scored
on the domain's val split by the accuracy of positive - negative logits (298: alpha = 1 in stage I,
whatever the test's alpha) and kept when strictly better (248-252: ties keep the earlier epoch). The
schedule is b32_ep70.yaml's (SGD, lr 2e-3, batch 32, 70 epochs, cosine per epoch, constant warm-up at
1e-5) with train.py's argparse defaults over it (weight decay 1e-4, 4 warm-up epochs: train.py:72-79,
225-227; the scripts pass none of those flags); momentum 0.9 is Dassl's default.

How the pair goes through ``run.prompt_labels`` (one PromptLabel per domain, stored by the label store
under a key made of the learner's name and options): :class:`DualCoOp` returns the *positive* label, its
``ctx`` the positive context -- a CoOp prompt label any consumer of prompt labels can use as it is
(``--set spg-cgan.learner=dpspg-coop`` gives SPG a sound label) -- and carries the negative context,
learned in the same loop and selected with it, in its metadata under ``negative_ctx`` as a nested list of
floats. The label store writes metadata as strict JSON (promptgen.toolkit.checkpoints.save_prompt_label), and a
float32 written by ``json`` and read back is the same float32: the round trip is exact. One entry per
domain, written atomically, so the two contexts can never come from different trainings; the method
splits it with :func:`split_label`. The alternatives train twice or couple entries: a ``path`` option
would give the two paths two store keys and two trainings of the same loop; a context [positive;
negative] stacked in ``ctx`` would make ``n_ctx`` wrong for every consumer (and the phrases may differ
in length).
"""

from __future__ import annotations

from typing import Annotated

import attrs
import torch
import torch.nn.functional as F

from promptgen.toolkit import (
    accuracy, ConfigError, Epochs, FeatureSet, option, phrase_embedding, prompt_logits, PromptAssembler,
    PromptgenError, PromptLabel, train_prompts,
)
from promptgen_dpspg.negative import NegativeCoOp, STAGE_ONE_PRESETS, StageOneOptions

NEGATIVE_CTX = "negative_ctx"  # the metadata key of the negative context (a list of n_ctx lists of D floats)
SELECTION_ALPHA = 1.0  # stage I scores positive - 1 * negative (dpspg_coop.py:298); the test's alpha is 0.2


class _Contexts(torch.nn.Module):
    def __init__(self, positive: torch.Tensor, negative: torch.Tensor):
        super().__init__()
        self.positive = torch.nn.Parameter(positive)
        self.negative = torch.nn.Parameter(negative)


class DualCoOp:
    """DPSPG's stage I: a domain's positive and negative contexts in one SGD loop, selected on positive - negative."""

    name = "dpspg-coop"
    presets = STAGE_ONE_PRESETS  # the official stage I (module docstring); ties keep the earlier epoch

    @attrs.frozen(kw_only=True)
    class Options(StageOneOptions):
        ctx_init: Annotated[str, option("phrase the positive context starts from, one vector per word "
                                        "(DPSPG: 'a photo of a')")] = "a photo of a"
        negative_ctx_init: Annotated[str, option("phrase the negative context starts from, one vector per word "
                                                 "(DPSPG: 'a photo without a')")] = "a photo without a"

    def __init__(self, options: Options = Options()):
        if not options.ctx_init or not options.negative_ctx_init:
            raise ConfigError(f"{self.name}: ctx_init and negative_ctx_init must be phrases; got {options.ctx_init!r}, "
                              f"{options.negative_ctx_init!r}")
        self.options = options
        self.schedule = options.schedule

    @staticmethod
    def loss(positive: torch.Tensor, negative: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(sum, positive loss, negative loss) of a batch's logits [B, C]: CE + BCE, summed (dpspg_coop.py:221-229)."""
        positive_loss = F.cross_entropy(positive, labels)
        negative_loss = NegativeCoOp.loss(negative, labels)
        return positive_loss + negative_loss, positive_loss, negative_loss

    @staticmethod
    def score(positive: torch.Tensor, negative: torch.Tensor, labels: torch.Tensor) -> float:
        """The epoch's score: the accuracy of positive - negative logits (dpspg_coop.py:298)."""
        return accuracy(positive - SELECTION_ALPHA * negative, labels)

    def fit(self, backbone, class_names, train: FeatureSet, val: FeatureSet | None, domain: str) -> PromptLabel:
        device = backbone.device
        initial = {path: phrase_embedding(backbone, getattr(self.options, key), f"{self.name} ({key})").float()
                   for path, key in (("positive", "ctx_init"), ("negative", "negative_ctx_init"))}
        contexts = _Contexts(initial["positive"].clone().to(device), initial["negative"].clone().to(device))
        assemblers = {path: PromptAssembler(backbone, class_names, len(ctx)) for path, ctx in initial.items()}
        selection = val if val is not None and len(val) else train
        epochs = Epochs(train, self.schedule.batch_size, torch.Generator().manual_seed(self.options.seed))
        parts = []  # (positive loss, negative loss) of every step, in order

        def batch_logits(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = features.to(device)
            return tuple(backbone.logit_scale * features @ assemblers[path].text_features(
                backbone, getattr(contexts, path)).T for path in ("positive", "negative"))

        def batch_loss(index):
            total, positive, negative = self.loss(*batch_logits(train.features[index]), train.labels[index].to(device))
            parts.append((positive.item(), negative.item()))
            return total

        def selection_logits() -> tuple[torch.Tensor, torch.Tensor]:
            return tuple(prompt_logits(backbone, assemblers[path], getattr(contexts, path).detach(), selection.features)
                         for path in ("positive", "negative"))

        result = train_prompts(contexts, batches=epochs.next, steps=epochs.steps, loss=batch_loss,
                               score=lambda: self.score(*selection_logits(), selection.labels),
                               **self.options.train_arguments(), progress=self.options.progress,
                               desc=f"{self.name} [{domain}]",
                               score_name="val_joint_accuracy")
        history = result["history"]
        for row, start in zip(history, range(0, len(parts), max(1, epochs.steps))):
            chunk = parts[start:start + epochs.steps]
            if chunk:
                row["positive_loss"] = sum(p for p, _ in chunk) / len(chunk)
                row["negative_loss"] = sum(n for _, n in chunk) / len(chunk)
        with torch.no_grad():  # the selected pair, each path on its own (what the joint score hides)
            positive_logits, negative_logits = selection_logits()
        positive, negative = contexts.positive.detach().cpu(), contexts.negative.detach().cpu()
        config = {"ctx_init": self.options.ctx_init, "negative_ctx_init": self.options.negative_ctx_init,
                  **self.options.config(), "n_ctx": int(positive.shape[0]), "negative_n_ctx": int(negative.shape[0])}
        return PromptLabel(
            ctx=positive, fingerprint=backbone.fingerprint, domain=domain, class_names=tuple(class_names),
            metadata={"learner": self.name, "path": "positive", "val_joint_accuracy": result["best_score"],
                      "val_accuracy": accuracy(positive_logits, selection.labels),
                      "val_argmin_accuracy": NegativeCoOp.score(negative_logits, selection.labels),
                      "best_epoch": result["best_epoch"], "selected_on": "val" if selection is val else "train",
                      "steps": result["steps"], "config": config, "history": history,
                      NEGATIVE_CTX: negative.tolist()})


def split_label(label: PromptLabel) -> tuple[PromptLabel, PromptLabel]:
    """(positive, negative) prompt labels of one domain from a :class:`DualCoOp` label (trained or loaded from the
    label store): the negative context leaves the positive label's metadata; both keep the pair's record."""
    if NEGATIVE_CTX not in label.metadata:
        raise PromptgenError(f"prompt label of {label.domain!r} (learner {label.metadata.get('learner')!r}) has no "
                             f"'{NEGATIVE_CTX}': it was not learned by {DualCoOp.name}, which trains both paths")
    shared = {key: value for key, value in label.metadata.items() if key not in (NEGATIVE_CTX, "history", "path")}
    positive = attrs.evolve(label, metadata={k: v for k, v in label.metadata.items() if k != NEGATIVE_CTX})
    negative = PromptLabel(ctx=torch.tensor(label.metadata[NEGATIVE_CTX], dtype=label.ctx.dtype),
                           fingerprint=label.fingerprint, domain=label.domain, class_names=label.class_names,
                           metadata={**shared, "path": "negative", "negative": True})
    return positive, negative
