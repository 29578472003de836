"""Built-in plugin: the ``cgan`` prompt generator (stage II of SPG)."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_generators(register):
    register("cgan", lazy("promptgen_cgan.generator:CGANGenerator"))
