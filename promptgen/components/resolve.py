"""The one resolver: which options a component receives, for every kind, backbones and datasets included.

A component's options come, in order, from its option defaults, its preset (``gpu``/``cpu``, with a
``<preset>/<dataset>`` entry over it), the run's settings of its name (a suite's ``[run.overrides]``,
``--set name.option=value``; for the backbone also the config's ``backbone.options``) and, for the
run values it declares (promptgen.components.run_values), the run's. Every value is checked against
the option's declaration (type, range, choices) and an unknown one fails naming the component.

The run engine builds components with :func:`component_options`; the dry run prints
:func:`effective_options` (the same values, defaults and derived ones included); config.json records
:func:`resolved_components`; extraction, the label store's identity, perf and method costs call the
same functions. What the dry run prints is what the component receives, by construction.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import attrs

from promptgen.components.lazy import factory_attribute
from promptgen.components.options import RUN_VALUE_NAMES, check_values
from promptgen.components.presets import component_preset
from promptgen.components.run_values import RunValues
from promptgen.errors import ConfigError, suggestion


@attrs.frozen
class Settings:
    """What a run says about its components' options: the preset, the dataset presets are chosen for, the
    overrides by component name, and the backbone config's own options."""

    preset: str
    dataset: str | None = None
    overrides: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    backbone_options: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def of(cls, config, preset: str) -> Settings:
        """The settings of a RunConfig under the resolved ``preset``."""
        return cls(preset, config.dataset, config.overrides, config.backbone.options)


def _sections(component) -> tuple[str, ...]:
    """The override sections that reach a component: those it takes settings from (``settings_from``: SPG's
    stage I learner ``spg-coop`` takes ``coop.*`` too), then its own name and aliases."""
    return (*(factory_attribute(component.factory, "settings_from") or ()), *component.aliases, component.name)


def set_options(registry, kind: str, name: str, settings: Settings) -> dict:
    """The values the preset and the run's settings give the component (defaults and run values left out)."""
    component = registry.get(kind, name)
    declared = component.options
    dataset = name if kind == "dataset" else settings.dataset  # a dataset's preset entry is its own
    values = check_values(declared, component_preset(component.factory, settings.preset, dataset),
                          f"{component.where}, preset '{settings.preset}'", registry)
    # a key no component of a section's name declares fails here too (a section may name components of several
    # kinds: `coop` is a method and a learner; each takes the keys it declares)
    check_overrides(registry, {section: settings.overrides[section] for section in (*component.aliases, component.name)
                               if section in settings.overrides})
    if kind == "backbone":  # the config's backbone.options are this backbone's alone: an unknown one fails
        values.update(check_values(declared, settings.backbone_options, f"{component.where}, backbone.options",
                                   registry))
    for layer in (settings.overrides.get(section, {}) for section in _sections(component)):
        values.update(check_values(declared, {k: v for k, v in layer.items() if k in declared}, component.where,
                                   registry))
    return values


def component_options(registry, kind: str, name: str, settings: Settings, run: RunValues | None = None) -> dict:
    """What the component's factory receives besides its hook-spec arguments: :func:`set_options` and the run
    values it declares (a value set for it by name wins over the run's)."""
    values = set_options(registry, kind, name, settings)
    declared = registry.get(kind, name).options
    offered = run.offered_to(kind) if run is not None else {}
    values.update({key: value for key, value in offered.items() if key in declared and key not in values})
    return values


def effective_options(registry, kind: str, name: str, settings: Settings, run: RunValues | None = None) -> dict:
    """Every option's value as the component runs with it, in its declaration's order: defaults, then
    :func:`component_options`, then what the component derives from them.

    A factory may declare ``effective_options(values) -> values`` (a static or class method beside its
    ``presets``): options it derives from others (CoOp's ``n_ctx`` from ``ctx_init``), raising a
    ConfigError for settings that contradict each other.
    """
    component = registry.get(kind, name)
    declared = component.options
    run_names = set(RUN_VALUE_NAMES) - ({"seed"} if kind == "dataset" else set())  # a dataset's seed: an option
    values = {key: option.default for key, option in declared.items()
              if not option.required and key not in run_names}
    values.update(component_options(registry, kind, name, settings, run))
    derive = factory_attribute(component.factory, "effective_options")
    if derive is None:
        return values
    try:
        return dict(derive(dict(values)))
    except ConfigError as error:  # name the component the user sets (its message may not)
        raise ConfigError(str(error) if str(error).startswith(component.name) else f"{component.name}: {error}") \
            from None


def resolved_components(registry, components: Iterable[tuple[str, str]], settings: Settings,
                        run: RunValues | None = None) -> dict[str, dict[str, dict]]:
    """``{kind: {name: effective options}}`` for each (kind, name): what the dry run prints and config.json
    records (run values that describe where or how to report, not what is computed, left out)."""
    table: dict[str, dict[str, dict]] = {}
    for kind, name in components:
        values = effective_options(registry, kind, name, settings, run)
        table.setdefault(kind, {})[registry.canonical(kind, name)] = {
            key: value for key, value in values.items() if key not in RunValues.NOT_IDENTITY}
    return table


def check_overrides(registry, overrides: Mapping[str, Mapping[str, Any]]) -> None:
    """Every key is an option of a component of its section's name, and its value one the option accepts (the
    sections themselves are checked by promptgen.runs.config.check_names, which imports no component)."""
    for section, values in overrides.items():
        components = [c for c in registry if c.name == section or section in c.aliases]
        for key, value in values.items():
            owners = [c for c in components if key in c.options]
            if not owners:
                listed = "; ".join(f"{c.where}: {', '.join(c.options) or 'none'}" for c in components)
                raise ConfigError(f"{section}: unknown option {key!r}; options of {listed}"
                                  f"{suggestion(key, [option for c in components for option in c.options])}")
            for component in owners:
                component.options[key].check(value, component.where, registry)


def build(registry, kind: str, name: str, settings: Settings, run: RunValues | None = None, **arguments) -> Any:
    """Build a component with the options the resolver gives it; ``arguments`` are those its hook specification
    names (a dataset's ``root``, a backbone's ``model``, ``pretrained``, ``device``, ``precision``, ...)."""
    return registry.create(kind, name, **arguments, **component_options(registry, kind, name, settings, run))


def build_launcher(registry, name: str, flags: Mapping[str, Any], settings: Settings | None = None,
                   progress: bool = True) -> Any:
    """A launcher, as a command line asks for it: the run's settings of its name (a suite's overrides), then the
    command's flags it declares (``workers``, ``address``, ...: None is 'not given'), and ``progress``."""
    declared = registry.get("launcher", name).options
    given = {key: value for key, value in flags.items() if value is not None and key in declared}
    settings = settings or Settings("cpu")
    overrides = {**settings.overrides, name: {**settings.overrides.get(name, {}), **given}}
    return build(registry, "launcher", name, attrs.evolve(settings, overrides=overrides), RunValues(progress=progress))
