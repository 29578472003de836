"""Component settings given on a command line: ``--set component.option=value`` and ``--learner`` /
``--generator``, as the overrides a :class:`~promptgen.runs.config.RunConfig` takes ({component: {option: value}}).

A library: the ``promptgen`` command and ``python -m benchmarks.run`` both read their flags into these; nothing
here parses a command line, and nothing imports a plugin (or torch).
"""

from __future__ import annotations

from promptgen.errors import ConfigError

# --learner and --generator: the kind of component each names
COMPONENT_FLAGS = {"learner": "prompt_learner", "generator": "generator"}


def parse_settings(settings: list[str] | None) -> dict:
    """``--set component.option=value`` (repeatable) as overrides: {component: {option: value}}.

    The value is read as a TOML value (2, 2e-3, true, "text", [1, 2]); anything that is not one is
    taken as text, so ``--set coop.ctx_init=a photo of a`` needs no quotes.
    """
    overrides: dict[str, dict] = {}
    for setting in settings or ():
        target, equals, text = setting.partition("=")
        component, dot, option = target.strip().partition(".")
        if not equals or not dot or not component or not option:
            raise ConfigError(f"--set {setting!r}: expected COMPONENT.OPTION=VALUE, e.g. --set coop.epochs=2")
        overrides.setdefault(component, {})[option] = _toml_value(text.strip())
    return overrides


def _toml_value(text: str):
    try:
        import tomllib
    except ImportError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def merge_overrides(*parts: dict) -> dict:
    """Overrides merged per component; a later part's option wins."""
    merged: dict[str, dict] = {}
    for part in parts:
        for component, values in part.items():
            merged.setdefault(component, {}).update(values)
    return merged


def method_overrides(registry, method: str, components: dict[str, str | None]) -> dict:
    """``--learner`` / ``--generator`` as options of the method, which must declare them; the names they give
    must be registered (checked here, before torch loads)."""
    chosen = {option: name for option, name in components.items() if name is not None}
    if not chosen:
        return {}
    component = registry.get("method", method)
    for option, name in chosen.items():  # names first: reading the method's options imports it (and torch)
        kind = COMPONENT_FLAGS[option]
        if not registry.has(kind, name):
            raise ConfigError(f"--{option}: method {component.name!r} uses {kind.replace('_', ' ')} {name!r}, which is "
                              f"not registered; registered: {', '.join(registry.names(kind)) or 'none'}"
                              f"{registry.unknown_hint(kind, name)}")
    for option in chosen:
        if option not in component.options:
            raise ConfigError(f"method {method!r} takes no --{option}; its options: "
                              f"{', '.join(component.options) or 'none'}")
    return {component.name: chosen}
