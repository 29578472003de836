"""Built-in plugin: the ``zeroshot`` prompt learner (a hand-written prompt, no training)."""

from promptgen import hookimpl
from promptgen.prompts import phrase_embedding
from promptgen.values import PromptLabel


class ZeroShotPrompt:
    """Zero-shot CLIP: the words of a phrase ("a photo of a") as the context, learned from nothing."""

    def __init__(self, ctx_init: str = "a photo of a"):
        self.ctx_init = ctx_init

    def fit(self, backbone, class_names, train, val, domain) -> PromptLabel:
        return PromptLabel(
            ctx=phrase_embedding(backbone, self.ctx_init).float().cpu(),
            fingerprint=backbone.fingerprint,
            domain=domain,
            class_names=tuple(class_names),
            metadata={"learner": "zeroshot", "ctx_init": self.ctx_init},
        )


@hookimpl
def register_prompt_learners(register):
    register("zeroshot", ZeroShotPrompt)
