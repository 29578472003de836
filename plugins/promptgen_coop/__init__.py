"""Built-in plugin: the ``coop`` prompt learner, ``spg-coop`` (CoOp with the schedule of SPG's stage I: one domain
prompt label per source domain) and the ``coop`` method (one CoOp prompt learned on the source domains pooled)."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_prompt_learners(register):
    register("coop", lazy("promptgen_coop.learner:CoOpPrompt"))
    register("spg-coop", lazy("promptgen_coop.learner:SPGStageOne"))


@hookimpl
def register_methods(register):
    register("coop", lazy("promptgen_coop.method:CoOp"))
