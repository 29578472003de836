"""Built-in plugin: the ``cvae`` prompt generator (a conditional VAE for stage II)."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_generators(register):
    register("cvae", lazy("promptgen_cvae.generator:CVAEGenerator"))
