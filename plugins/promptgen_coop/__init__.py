"""Built-in plugin: the ``coop`` prompt learner (stage I of SPG: one domain prompt label per source domain)."""

from promptgen import hookimpl
from promptgen_coop.learner import CoOpPrompt


@hookimpl
def register_prompt_learners(register):
    register("coop", CoOpPrompt)
