"""Hook specifications: the contract between promptgen and its plugins.

Every hook hands the plugin a ``register(name, factory, aliases=())`` callable;
a plugin calls it once per component it provides. ``factory`` is a class (or any
callable returning an object, e.g. a ``functools.partial``) that satisfies the
protocol of its kind in :mod:`promptgen.components.protocols`; a class is checked when it
is registered, anything else when it first builds. ``aliases`` are other names
that find the same component (not listed as components of their own).

The factory's keyword parameters, other than the arguments its hook passes,
are the component's options (:mod:`promptgen.components.options`); a ``presets`` attribute
gives their values per preset and dataset (:mod:`promptgen.components.presets`); one resolver
(:mod:`promptgen.components.resolve`) decides what each component receives.

Each ``register_*`` hook is one row of :mod:`promptgen.components.kinds` (its kind, protocol and the
arguments it passes a factory, in the order the registry calls them).

A plugin is a module (or object) with functions of these names marked with
``@promptgen.hookimpl``. It need implement only the hooks it uses.
"""

import pluggy

PROJECT_NAME = "promptgen"
ENTRY_POINT_GROUP = "promptgen"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_backbones(register):
    """Register backbones: ``register(name, factory)``.

    ``factory(model=..., pretrained=..., device=..., precision=..., **options)``
    returns a :class:`promptgen.components.protocols.Backbone`.
    """


@hookspec
def register_prompt_learners(register):
    """Register prompt learners (stage I): ``register(name, factory)``.

    ``factory(**options)`` returns a :class:`promptgen.components.protocols.PromptLearner`.
    """


@hookspec
def register_generators(register):
    """Register prompt generators (stage II): ``register(name, factory)``.

    ``factory(feature_dim=..., n_ctx=..., ctx_dim=..., **options)`` returns a
    :class:`promptgen.components.protocols.Generator`; its ``fit`` report's ``"history"`` (one dict per epoch) is
    the run's stage II history.json and curves.
    """


@hookspec
def register_datasets(register):
    """Register domain-generalization datasets: ``register(name, factory)``.

    ``factory(root=..., **options)`` returns a :class:`promptgen.components.protocols.Dataset`. A
    dataset's ``seed`` option, when it declares one, is its data's seed (a user sets it with
    ``--set <dataset>.seed=N``): the run's seed never reaches a dataset, so every run seed sees the same
    samples. ``progress`` and ``cache_dir`` are run values it may declare
    (promptgen.components.run_values).
    """


@hookspec
def register_launchers(register):
    """Register job launchers: ``register(name, factory)``.

    ``factory(**options)`` returns a :class:`promptgen.components.protocols.Launcher`.
    """


@hookspec
def register_methods(register, registry):
    """Register DG methods (zero-shot, CoOp, SPG, ...): ``register(name, factory)``.

    ``factory(**options)`` returns a :class:`promptgen.components.protocols.Method`: a recipe that composes the
    other kinds (its prompt learner, its generator, ...) and says how it predicts. This hook runs
    after every other ``register_*`` hook, and ``registry`` holds their components, so a plugin may
    register one method per generator (``for name in registry.names("generator")``). An
    implementation may leave out the ``registry`` argument.
    """


@hookspec
def add_commands(commands):
    """Add subcommands to the ``promptgen`` command line.

    ``commands`` is the argparse sub-parsers object: ``parser = commands.add_parser(name, help=...)``,
    then ``parser.set_defaults(run=function)``, where ``function(args) -> int`` is the exit status.
    """
