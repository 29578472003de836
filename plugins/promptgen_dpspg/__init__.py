"""Built-in plugin: DPSPG (dual-path stable soft prompt generation; Bai et al., 2025) and its ablations.

- prompt learners ``negative-coop`` (the negative prompt label alone: "a photo without a", BCE against
  complementary labels) and ``dpspg-coop`` (DPSPG's stage I as its code runs it: a domain's positive and
  negative contexts in one loop, selected on positive - negative);
- generator ``transformer``: DPSPG's stage II (so SPG gets ``spg-transformer`` too);
- methods ``dpspg`` (as published), ``dpspg-positive`` (the transformer generator without the negative
  path) and ``spg-<generator>+neg`` for every registered generator (the negative path added to it).

Registered through the same entry point and hooks as a third-party package; see docs/methods.md.
"""

from promptgen import hookimpl

from promptgen import lazy

PAPER_GENERATOR = "transformer"


@hookimpl
def register_prompt_learners(register):
    register("negative-coop", lazy("promptgen_dpspg.negative:NegativeCoOp"))
    register("dpspg-coop", lazy("promptgen_dpspg.joint:DualCoOp"))


@hookimpl
def register_generators(register):
    register(PAPER_GENERATOR, lazy("promptgen_dpspg.transformer:TransformerGenerator"))


def _variant(rank: int, **bound):
    factory = lazy("promptgen_dpspg.method:DualPath", **bound)
    factory.rank = rank
    return factory


@hookimpl
def register_methods(register, registry):
    # dpspg *is* the negative path added to SPG's transformer generator: one method, two names
    register("dpspg", _variant(90, generator=PAPER_GENERATOR), aliases=(f"spg-{PAPER_GENERATOR}+neg",))
    register("dpspg-positive", _variant(91, generator=PAPER_GENERATOR, negative=False))
    for generator in (name for name in registry.names("generator") if name != PAPER_GENERATOR):
        register(f"spg-{generator}+neg", _variant(92, generator=generator))
