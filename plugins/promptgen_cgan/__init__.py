"""Built-in plugin: the ``cgan`` prompt generator (stage II of SPG)."""

from promptgen import hookimpl
from promptgen_cgan.generator import CGANGenerator


@hookimpl
def register_generators(register):
    register("cgan", CGANGenerator)
