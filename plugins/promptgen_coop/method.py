"""The ``coop`` method: one CoOp prompt learned on the source domains pooled."""

from typing import Annotated

import attrs

from promptgen.toolkit import option, SharedPromptMethod


class CoOp(SharedPromptMethod):
    """CoOp (Zhou et al., IJCV 2022): one learned prompt for every image, trained on the source domains pooled."""

    rank = 20  # the SPG paper's table: zero-shot, linear probe, CoOp, CoCoOp, DPL, VP, VPT, MaPLe, SPG

    @attrs.frozen(kw_only=True)
    class Options:
        learner: Annotated[str, option("the prompt learner of the one shared prompt",
                                       component="prompt_learner")] = "coop"

    def __init__(self, options: Options = Options()):
        super().__init__(options.learner)
        self.options = options
