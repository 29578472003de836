"""Built-in plugin: the SPG methods -- ``spg-<generator>`` for every registered generator, ``spg`` for SPG as
published (its CGAN)."""

from promptgen import hookimpl

from promptgen import lazy

PAPER_GENERATOR = "cgan"  # SPG as published; `spg` names it
RANK = 80  # after the baselines, as in the SPG paper's table; the other generators' rows just after


@hookimpl
def register_methods(register, registry):
    for generator in registry.names("generator"):
        aliases = ("spg",) if generator == PAPER_GENERATOR else ()
        factory = lazy("promptgen_spg.method:SPG", generator=generator)
        factory.rank = RANK if generator == PAPER_GENERATOR else RANK + 1  # the paper's row first
        register(f"spg-{generator}", factory, aliases=aliases)
