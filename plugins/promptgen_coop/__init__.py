"""Built-in plugin: the ``coop`` prompt learner (stage I of SPG: one domain prompt label per source domain) and the
``coop`` method (one CoOp prompt learned on the source domains pooled)."""

from promptgen import hookimpl, lazy


@hookimpl
def register_prompt_learners(register):
    register("coop", lazy("promptgen_coop.learner:CoOpPrompt"))


@hookimpl
def register_methods(register):
    register("coop", lazy("promptgen_coop.method:CoOp"))
