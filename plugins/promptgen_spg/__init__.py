"""Built-in plugin: the SPG methods -- ``spg-<generator>`` for every registered generator, ``spg`` for SPG as
published (its CGAN)."""

import functools

from promptgen import hookimpl
from promptgen_spg.method import SPG

PAPER_GENERATOR = "cgan"  # SPG as published; `spg` names it


@hookimpl
def register_methods(register, registry):
    for generator in registry.names("generator"):
        aliases = ("spg",) if generator == PAPER_GENERATOR else ()
        factory = functools.partial(SPG, generator=generator)
        factory.rank = SPG.rank if generator == PAPER_GENERATOR else SPG.rank + 1  # the paper's row first
        register(f"spg-{generator}", factory, aliases=aliases)
