"""The kinds of component, in one table: each kind's name, the hook that registers it, the protocol a built one
satisfies and the arguments its hook passes to a factory, in the order the registry calls the hooks.

A new kind is one row here plus its hook specification (promptgen.components.hookspecs) and its protocol
(promptgen.components.protocols); the registry, the options and the listings read this table.
"""

from __future__ import annotations

import attrs

from promptgen.components.protocols import Backbone, Dataset, Generator, Launcher, Method, PromptLearner


@attrs.frozen
class Kind:
    """One kind of component."""

    name: str  # "prompt_learner": how messages, --set sections and registry.names(kind) spell it
    hook: str  # the register_* hook of promptgen.components.hookspecs that registers components of this kind
    protocol: type  # the typing.Protocol a component of this kind satisfies, checked at registration
    hook_arguments: tuple[str, ...] = ()  # what the hook specification passes to the factory: never options


# Methods last: their hook sees the registry with every other kind's components in it.
COMPONENT_KINDS: tuple[Kind, ...] = (
    Kind("backbone", "register_backbones", Backbone, ("model", "pretrained", "device", "precision")),
    Kind("prompt_learner", "register_prompt_learners", PromptLearner),
    Kind("generator", "register_generators", Generator, ("feature_dim", "n_ctx", "ctx_dim")),
    Kind("dataset", "register_datasets", Dataset, ("root",)),
    Kind("launcher", "register_launchers", Launcher),
    Kind("method", "register_methods", Method),
)

# The table by one column each, for the places that want one (all kind name -> ..., in registration order).
KINDS: tuple[str, ...] = tuple(kind.name for kind in COMPONENT_KINDS)
HOOKS: dict[str, str] = {kind.name: kind.hook for kind in COMPONENT_KINDS}
PROTOCOLS: dict[str, type] = {kind.name: kind.protocol for kind in COMPONENT_KINDS}
HOOKSPEC_ARGUMENTS: dict[str, tuple[str, ...]] = {kind.name: kind.hook_arguments for kind in COMPONENT_KINDS}
