"""Built-in plugin: the ``zeroshot`` prompt learner (a hand-written prompt, no training) and the ``zero-shot`` method."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_prompt_learners(register):
    register("zeroshot", lazy("promptgen_zeroshot.method:ZeroShotPrompt"))


@hookimpl
def register_methods(register):
    register("zero-shot", lazy("promptgen_zeroshot.method:ZeroShot"))
