"""Component options: declared once, by the factory's signature, and checked before anything is built.

A component's options are the keyword parameters of its factory (a class's ``__init__``) except the
arguments its hook specification passes (a generator's ``feature_dim``, ``n_ctx``, ``ctx_dim``, ...).
Each option has a default and a type, read from its annotation (else from its default); a
``Literal[...]`` annotation lists its choices. Where a range, a description or a search space is
wanted, the annotation says it too, DomainBed-style, in the same place::

    def __init__(self, lr: Annotated[float, option("learning rate", above=0)] = 2e-3,
                 update: Literal["d-first", "g-first"] = "g-first", ...)

The options every training component shares (the schedule block: ``epochs``, ``batch_size``, ``lr``,
``warmup_epochs``, ``weight_decay``) and the run values have their description and range declared
once, here (:data:`SHARED`), for every component that takes them. ``promptgen plugins --options NAME``
lists them all; a bad value fails before any work with one line naming the component and the option.
A factory's ``**kwargs`` declares nothing: only named options can be set.

**An options object** (llm's ``class Options(llm.Options)``, DomainBed's hparams): a component class may
instead declare its options as the fields of a frozen attrs class, its ``Options`` attribute, and take
them whole as one ``options`` parameter beside its hook specification's arguments::

    class MyGenerator:
        @attrs.frozen(kw_only=True)
        class Options(GeneratorScheduleOptions):    # epochs, batch_size, lr, ..., seed, progress inherited
            hidden: Annotated[int, option("hidden width", minimum=1)] = 256
            epochs: int = 20                        # redeclared: only a default that differs

        def __init__(self, feature_dim, n_ctx, ctx_dim, options: Options): ...

The fields are read exactly as a signature's keywords are (types, ``Annotated`` declarations, the shared
ones of :data:`SHARED`), the fields the component adds listed first; :func:`call_factory` makes the object from the
resolved values and passes it as ``options``. A function factory does the same with an ``options``
parameter annotated with its attrs class.

Run values (promptgen.components.run_values) reach a component that declares an option of their name:
``seed`` (the run's seed), ``progress`` (progress bars on or off), ``cache_dir`` (where generated data
goes) and ``device``. They are not options a user sets per component (a dataset's ``seed`` is its
data's seed, an option: every run seed sees the same data).
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from typing import Any, Callable, Mapping

import attrs

from promptgen.components.kinds import HOOKSPEC_ARGUMENTS  # what a kind's hook passes a factory: never options
from promptgen.components.lazy import factory_attribute, unwrap
from promptgen.errors import ConfigError, suggestion

RUN_VALUE_NAMES = ("seed", "progress", "cache_dir", "device")  # promptgen.components.run_values.RunValues' fields

_MISSING = inspect.Parameter.empty


@attrs.frozen
class OptionInfo:
    """What an annotation adds to an option: a one-line description, a range, choices, a search space.

    above/minimum/maximum/below bound a number (above, below: strictly); choices lists the values it accepts;
    component names a kind whose registered names are its choices (a method's ``generator``); search is a
    random distribution for hyperparameter search (anything with ``draw(rng)``).
    """

    help: str = ""
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    below: float | None = None
    choices: tuple | None = None
    component: str | None = None
    search: Any = None


def option(help: str = "", *, minimum: float | None = None, above: float | None = None,
           maximum: float | None = None, below: float | None = None, choices=None, component: str | None = None,
           search: Any = None) -> OptionInfo:
    """Describe an option in its annotation: ``epochs: Annotated[int, option("epochs", minimum=1)] = 8``."""
    return OptionInfo(help, minimum, above, maximum, below, None if choices is None else tuple(choices), component,
                      search)


# Declared once for every component that takes an option of this name (an annotation's own info wins).
SHARED: dict[str, OptionInfo] = {
    "epochs": option("training epochs (one pass over the training images each: promptgen.toolkit.epochs)",
                     minimum=1),
    "batch_size": option("images per optimizer step", minimum=1),
    "lr": option("peak learning rate", above=0),
    "warmup_epochs": option("epochs of warm-up before the cosine schedule", minimum=0),
    "weight_decay": option("weight decay of the optimizer", minimum=0),
    "warmup_lr": option("learning rate of the constant warm-up epochs (Dassl's WARMUP_MIN_LR: 1e-5)", above=0),
    "momentum": option("SGD momentum (Dassl's default: 0.9)", minimum=0, maximum=1),
    "lr_schedule": option("learning-rate schedule: 'epoch' Dassl's, set once per epoch (the official code); 'step' "
                          "promptgen's per-step warm-up and cosine to zero", choices=("epoch", "step")),
    "seed": option("the run's seed (a run value)"),
    "progress": option("show progress bars (a run value)"),
    "cache_dir": option("where generated data and caches go (a run value)"),
    "device": option("the run's device (a run value)"),
    "sample_seed": option("seed of the noise drawn when sampling prompts (the same every call)"),
}



def searched(name: str, distribution: Any) -> OptionInfo:
    """A shared option's declaration (:data:`SHARED`) with a search space of this component's:
    ``lr: Annotated[float, searched("lr", LogUniform(1e-4, 1e-2))] = 2e-3`` (promptgen.components.search)."""
    return attrs.evolve(SHARED[name], search=distribution)


@attrs.frozen
class Option:
    """One option of a component: its name, default (``REQUIRED`` when it has none) and accepted types."""

    name: str
    default: Any
    types: tuple[type, ...] | None  # None: any value
    annotation: str = ""
    info: OptionInfo = OptionInfo()

    @property
    def help(self) -> str:
        return self.info.help

    @property
    def choices(self) -> tuple | None:
        return self.info.choices

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def check(self, value: Any, where: str, registry=None) -> Any:
        """``value`` if this option accepts it (an int for a float, a list for a tuple), else a ConfigError.

        NaN and infinities are refused whatever the type: no setting means them, and a NaN learning rate
        would train a run of NaNs and save it as a good one.
        """
        if not _finite(value):
            raise ConfigError(f"{where}: option '{self.name}' must be a finite number, got {value!r} (a number "
                              f"beyond ±1.8e308 reads as inf); give a finite value")
        if self.types is not None and not _accepts(self.types, value):
            raise ConfigError(f"{where}: option '{self.name}' must be {self.type_text()}, got {value!r} "
                              f"({type(value).__name__})")
        if self.types is not None and isinstance(value, list) and tuple in self.types and list not in self.types:
            value = tuple(value)
        problem = self.out_of_range(value)
        kind = self.info.component
        if problem is None and kind is not None and registry is not None and isinstance(value, str) \
                and not registry.has(kind, value):
            problem = f"a registered {kind.replace('_', ' ')} ({', '.join(registry.names(kind))})"
        if problem:
            hint = suggestion(value, [str(c) for c in self.info.choices or ()]) if isinstance(value, str) else ""
            raise ConfigError(f"{where}: option '{self.name}' must be {problem}, got {value!r}{hint}")
        return value

    def out_of_range(self, value: Any) -> str | None:
        """What ``value`` breaks of the option's declared range or choices ("one of a, b"), else None.
        The default is always accepted (a None default means 'not set')."""
        info = self.info
        if value is None or (not self.required and value == self.default and type(value) is type(self.default)):
            return None
        if info.choices is not None and value not in info.choices:
            return "one of " + ", ".join(map(repr, info.choices))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if info.minimum is not None and value < info.minimum:
                return f">= {info.minimum}"
            if info.above is not None and value <= info.above:
                return f"> {info.above}"
            if info.maximum is not None and value > info.maximum:
                return f"<= {info.maximum}"
            if info.below is not None and value >= info.below:
                return f"< {info.below}"
        return None

    def range_text(self) -> str:
        """The declared range or choices, as ``plugins --options`` shows them ("" when none)."""
        info = self.info
        if info.choices is not None:
            return "one of " + ", ".join(map(repr, info.choices))
        if info.component is not None:
            return f"a registered {info.component.replace('_', ' ')}"
        bounds = [f">= {info.minimum}" if info.minimum is not None else "",
                  f"> {info.above}" if info.above is not None else "",
                  f"<= {info.maximum}" if info.maximum is not None else "",
                  f"< {info.below}" if info.below is not None else ""]
        return " and ".join(b for b in bounds if b)

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
    if origin is typing.Annotated:
        return _types_of(typing.get_args(annotation)[0], default)
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
    factory, fixed = unwrap(factory)
    return (factory.__init__ if isinstance(factory, type) else factory), fixed


def options_class(factory: Callable) -> type | None:
    """The attrs class whose object ``factory`` takes whole as its ``options`` parameter (a class's ``Options``
    attribute, else the parameter's annotation); None for a factory that declares its options as keywords."""
    target, _ = _target(factory)
    try:
        parameter = inspect.signature(target).parameters.get("options")
    except (TypeError, ValueError):
        return None
    if parameter is None or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
        return None
    declared = factory_attribute(factory, "Options")
    if not attrs.has(declared):
        try:
            declared = typing.get_type_hints(target).get("options")
        except Exception:  # an annotation that cannot be resolved
            return None
    return declared if isinstance(declared, type) and attrs.has(declared) else None


def call_factory(factory: Callable, arguments: Mapping[str, Any]) -> Any:
    """Call ``factory`` with ``arguments`` (its options, run values and hook-specification arguments): as keywords,
    or, for a factory that takes an options object, the options gathered into one and the rest as keywords."""
    cls = options_class(factory)
    if cls is None:
        return factory(**arguments)
    target, fixed = unwrap(factory)
    fields = {field.name for field in attrs.fields(cls)}
    given = {**fixed, **arguments}
    values = {name: value for name, value in given.items() if name in fields}
    return target(**{name: value for name, value in given.items() if name not in fields}, options=cls(**values))


def _object_options(cls: type, fixed: Mapping[str, Any]) -> dict[str, Option]:
    """The options an options object's fields declare: the class's own fields first, then those it inherits."""
    hints = _hints(cls)
    fields = attrs.fields_dict(cls)
    options = {}
    for field in (fields[name] for name in _field_order(cls)):
        default = field.default
        if isinstance(default, attrs.Factory):
            default = default.factory()
        options[field.name] = _option(field.name, fixed.get(field.name, _MISSING if default is attrs.NOTHING
                                                            else default), hints)
    return options


def _hints(declarer: Any) -> dict[str, Any]:
    """The annotations of a signature or a class, ``Annotated`` kept; none where one cannot be resolved (the
    defaults' types are used then)."""
    try:
        return typing.get_type_hints(declarer, include_extras=True)
    except Exception:
        return {}


def _option(name: str, default: Any, hints: Mapping[str, Any]) -> Option:
    """One option as a keyword parameter or an options object's field declares it."""
    annotation = hints.get(name, _MISSING)
    return Option(name, default, _types_of(annotation, default), _annotation_text(annotation), _info(name, annotation))


def _field_order(cls: type) -> list[str]:
    """The fields a class adds to its attrs base, then the base's in the base's order, the run values last: a
    component's own options first, and the shared block in one order for every component (a redeclared default
    keeps its place)."""
    base = next((klass for klass in cls.__mro__[1:] if attrs.has(klass)), None)
    inherited = _field_order(base) if base is not None else []
    order = [field.name for field in attrs.fields(cls) if field.name not in inherited] + inherited
    return sorted(order, key=lambda name: name in RUN_VALUE_NAMES)  # the run values last


def declared_options(factory: Callable, kind: str) -> dict[str, Option]:
    """Every option ``factory`` declares, by name (hook-spec arguments and ``self`` left out)."""
    cls = options_class(factory)
    if cls is not None:
        return _object_options(cls, unwrap(factory)[1])
    target, fixed = _target(factory)
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}
    hints = _hints(target)
    skip = set(HOOKSPEC_ARGUMENTS[kind]) | {"self"}
    return {name: _option(name, fixed.get(name, parameter.default), hints)
            for name, parameter in signature.parameters.items()
            if name not in skip and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD,
                                                           parameter.POSITIONAL_ONLY)}


def _annotation_text(annotation: Any) -> str:
    if annotation is _MISSING:
        return ""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return inspect.formatannotation(annotation)


def _info(name: str, annotation: Any) -> OptionInfo:
    """The option's OptionInfo: its annotation's (``Annotated[..., option(...)]``), else the shared one of its
    name; choices from a ``Literal`` annotation."""
    info = SHARED.get(name, OptionInfo())
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        info = next((extra for extra in extras if isinstance(extra, OptionInfo)), info)
        annotation = base
    literal = _literal_values(annotation)
    if literal is not None and info.choices is None:
        info = attrs.evolve(info, choices=literal)
    return info


def _literal_values(annotation: Any) -> tuple | None:
    """The values a Literal annotation (or an Optional Literal) admits, else None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        values = [_literal_values(a) for a in typing.get_args(annotation) if a is not type(None)]
        if values and all(v is not None for v in values):
            return tuple(v for group in values for v in group) + (None,)
    return None


def check_values(options: Mapping[str, Option], values: Mapping[str, Any], where: str, registry=None) -> dict:
    """``values`` checked against ``options``: unknown names and wrong types fail naming ``where``."""
    unknown = sorted(set(values) - set(options))
    if unknown:
        settable = [name for name in options if name not in RUN_VALUE_NAMES]
        listed = ", ".join(settable) if settable else "none"
        raise ConfigError(f"{where}: unknown option{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(u) for u in unknown)}; its options: {listed}"
                          f"{suggestion(unknown[0], settable)}")
    return {name: options[name].check(value, where, registry) for name, value in values.items()}
