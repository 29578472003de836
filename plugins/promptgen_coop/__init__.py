"""Built-in plugin: the ``coop`` prompt learner (stage I of SPG: one domain prompt label per source domain) and the
``coop`` method (one CoOp prompt learned on the source domains pooled)."""

from promptgen import hookimpl
from promptgen.methods import SharedPromptMethod
from promptgen_coop.learner import CoOpPrompt


class CoOp(SharedPromptMethod):
    """CoOp (Zhou et al., IJCV 2022): one learned prompt for every image, trained on the source domains pooled."""

    rank = 20  # the SPG paper's table: zero-shot, linear probe, CoOp, CoCoOp, DPL, VP, VPT, MaPLe, SPG

    def __init__(self, learner: str = "coop"):
        super().__init__(learner)


@hookimpl
def register_prompt_learners(register):
    register("coop", CoOpPrompt)


@hookimpl
def register_methods(register):
    register("coop", CoOp)
