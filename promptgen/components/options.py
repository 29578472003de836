"""Component options: declared once, by the factory's signature, and checked before anything is built.

A component's options are the keyword parameters of its factory (a class's ``__init__``) except the
arguments its hook specification passes (a generator's ``feature_dim``, ``n_ctx``, ``ctx_dim``, ...).
Each option has a default and a type, read from its annotation (else from its default), so
``promptgen plugins --options NAME`` can list them and a bad value fails naming the component and
the option. A factory's ``**kwargs`` declares nothing: only named options can be set.

Run-level values reach a component that declares an option of their name: ``seed`` (the run's
seed), ``progress`` (progress bars on or off) and ``cache_dir`` (where generated data goes). They
are not options a user sets per component.
"""

from __future__ import annotations

import functools
import inspect
import math
import types
import typing
from typing import Any, Callable, Mapping

import attrs

from promptgen.errors import ConfigError, suggestion
from promptgen.components.lazy import resolve

# What each kind's hook specification passes to the factory (promptgen/components/hookspecs.py): never options.
HOOKSPEC_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "backbone": ("model", "pretrained", "device", "precision"),
    "prompt_learner": (),
    "generator": ("feature_dim", "n_ctx", "ctx_dim"),
    "dataset": ("root",),
    "launcher": (),
    "method": (),
}
RUN_VALUES = ("seed", "progress", "cache_dir")

_MISSING = inspect.Parameter.empty


@attrs.frozen
class Option:
    """One option of a component: its name, default (``REQUIRED`` when it has none) and accepted types."""

    name: str
    default: Any
    types: tuple[type, ...] | None  # None: any value
    annotation: str = ""

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def check(self, value: Any, where: str) -> Any:
        """``value`` if this option accepts it (an int for a float, a list for a tuple), else a ConfigError.

        NaN and infinities are refused whatever the type: no setting means them, and a NaN learning rate
        would train a run of NaNs and save it as a good one.
        """
        if not _finite(value):
            raise ConfigError(f"{where}: option '{self.name}' must be a finite number, got {value!r} (a number "
                              f"beyond ±1.8e308 reads as inf); give a finite value")
        if self.types is None or _accepts(self.types, value):
            return tuple(value) if isinstance(value, list) and tuple in self.types and list not in self.types else value
        raise ConfigError(f"{where}: option '{self.name}' must be {self.type_text()}, got {value!r} "
                          f"({type(value).__name__})")

    def type_text(self) -> str:
        if self.types is None:
            return "any value"
        names = [("None" if t is type(None) else t.__name__) for t in self.types]
        return " or ".join(dict.fromkeys(names))

    def default_text(self) -> str:
        return "(required)" if self.required else repr(self.default)


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(map(_finite, value))
    if isinstance(value, dict):
        return all(map(_finite, value.values()))
    return True


def _accepts(accepted: tuple[type, ...], value: Any) -> bool:
    if isinstance(value, bool):
        return bool in accepted
    if isinstance(value, int) and float in accepted:
        return True
    if isinstance(value, list) and tuple in accepted:
        return True
    return isinstance(value, tuple(t for t in accepted if t is not bool))


def _types_of(annotation: Any, default: Any) -> tuple[type, ...] | None:
    """The runtime types an annotation admits; None for 'anything' (no usable annotation and no default)."""
    if annotation is _MISSING or annotation is Any:
        return None if default is _MISSING or default is None else (type(default),)
    if annotation is None or annotation is type(None):
        return (type(None),)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        found: list[type] = []
        for argument in typing.get_args(annotation):
            inner = _types_of(argument, _MISSING)
            if inner is None:
                return None
            found.extend(inner)
        return tuple(dict.fromkeys(found))
    if origin is typing.Literal:
        return tuple(dict.fromkeys(type(value) for value in typing.get_args(annotation)))
    if origin is not None:
        return (origin,) if isinstance(origin, type) else None
    return (annotation,) if isinstance(annotation, type) else None


def _target(factory: Callable) -> tuple[Callable, dict]:
    """The callable whose signature declares the options, and the keywords a functools.partial fixed."""
    fixed: dict = {}
    factory = resolve(factory)
    while isinstance(factory, functools.partial):
        fixed = {**factory.keywords, **fixed}
        factory = factory.func
    return (factory.__init__ if isinstance(factory, type) else factory), fixed


def declared_options(factory: Callable, kind: str) -> dict[str, Option]:
    """Every option ``factory`` declares, by name (hook-spec arguments and ``self`` left out)."""
    target, fixed = _target(factory)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # an annotation that cannot be resolved: fall back to the defaults' types
        hints = {}
    skip = set(HOOKSPEC_ARGUMENTS[kind]) | {"self"}
    options = {}
    for name, parameter in signature.parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            continue
        default = fixed.get(name, parameter.default)
        annotation = hints.get(name, _MISSING)
        text = "" if annotation is _MISSING else inspect.formatannotation(annotation)
        options[name] = Option(name, default, _types_of(annotation, default), text)
    return options


def check_values(options: Mapping[str, Option], values: Mapping[str, Any], where: str) -> dict:
    """``values`` checked against ``options``: unknown names and wrong types fail naming ``where``."""
    unknown = sorted(set(values) - set(options))
    if unknown:
        settable = [name for name in options if name not in RUN_VALUES]
        listed = ", ".join(settable) if settable else "none"
        raise ConfigError(f"{where}: unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(u) for u in unknown)}; its options: {listed}{suggestion(unknown[0], settable)}")
    return {name: options[name].check(value, where) for name, value in values.items()}
