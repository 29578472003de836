"""Zero-shot CLIP: the hand-written prompt as a prompt learner that learns nothing, and as a method."""

from typing import Annotated

import attrs

from promptgen.toolkit import option, phrase_embedding, PromptLabel, SharedPromptMethod


class ZeroShotPrompt:
    """Zero-shot CLIP: the words of a phrase ("a photo of a") as the context, learned from nothing."""

    @attrs.frozen(kw_only=True)
    class Options:
        ctx_init: Annotated[str, option("the hand-written phrase before the class name (CLIP: 'a photo of a')")] = \
            "a photo of a"

    def __init__(self, options: Options = Options()):
        self.options = options

    def fit(self, backbone, class_names, train, val, domain) -> PromptLabel:
        return PromptLabel(
            ctx=phrase_embedding(backbone, self.options.ctx_init).float().cpu(),
            fingerprint=backbone.fingerprint,
            domain=domain,
            class_names=tuple(class_names),
            metadata={"learner": "zeroshot", "ctx_init": self.options.ctx_init},
        )


class ZeroShot(SharedPromptMethod):
    """Zero-shot CLIP: the hand-written prompt "a photo of a {class}." for every image; learns nothing."""

    rank = 0  # first row of the tables, as in the SPG paper
    deterministic = True  # no seed changes it: benchmark sweeps run it once

    @attrs.frozen(kw_only=True)
    class Options:
        learner: Annotated[str, option("the prompt learner that gives the prompt (zeroshot: the hand-written one)",
                                       component="prompt_learner")] = "zeroshot"

    def __init__(self, options: Options = Options()):
        super().__init__(options.learner)
        self.options = options

    def fit(self, run) -> dict:
        # A hand-written prompt reads no training data: no training features are computed.
        with run.timed("stage1"):
            self.label = run.create("prompt_learner", self.learner).fit(run.backbone, run.classes, None, None, "all")
        return {}
