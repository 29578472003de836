"""The plugin manager: loads plugins through the ``promptgen`` entry-point group and keeps their components.

Built-in plugins (``plugins/``) are installed with promptgen and load through the same group as
third-party ones. Each ``register_*`` hook implementation is called on its own so that every
component remembers the plugin that provided it. Methods register last, with the registry in
hand, so that a method plugin can offer one method per generator (``spg-<generator>``), third-party
generators included.

A Registry is passed to what uses it (``engine.run(config, out, registry=...)``); nothing reads a
process-wide registry behind the caller's back. :func:`default_registry` is the installed plugins,
loaded once per process, for callers that pass none.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import os
from typing import Any, Callable, Iterable, Iterator

import attrs
import pluggy

from promptgen.components import hookspecs
from promptgen.errors import (
    DISABLE_VARIABLE,
    DuplicateComponentError,
    PluginError,
    PluginLoadError,
    ProtocolError,
    UnknownComponentError,
    suggestion,
)
from promptgen.components.lazy import LazyFactory, unwrap
from promptgen.components.options import Option, call_factory, check_values, declared_options
from promptgen.components.kinds import HOOKS, KINDS, PROTOCOLS  # the one table of kinds, in registration order
from promptgen.components.protocols import missing_members


@attrs.frozen
class Component:
    """A registered component: its kind, name, the factory that builds it and the plugin that provided it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    aliases: tuple[str, ...] = ()

    @property
    def description(self) -> str:
        if isinstance(self.factory, LazyFactory):  # read from its source: listing plugins imports none of them
            return self.factory.description
        factory, _ = unwrap(self.factory)  # a partial's own __doc__ is functools' text
        doc = (getattr(factory, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""

    @property
    def options(self) -> dict[str, Option]:
        """The options this component declares (its factory's keyword parameters; see promptgen.components.options)."""
        return declared_options(self.factory, self.kind)

    @property
    def where(self) -> str:
        """How messages name it: "generator 'my-generator' (plugin my_plugin)"."""
        return f"{self.kind.replace('_', ' ')} '{self.name}' (plugin {self.plugin})"


@attrs.define
class Registry:
    """All components registered by the loaded plugins, plus the errors met while loading them."""

    plugin_manager: pluggy.PluginManager
    components: dict[tuple[str, str], Component] = attrs.field(factory=dict)
    aliases: dict[tuple[str, str], str] = attrs.field(factory=dict)  # (kind, alias) -> name
    errors: list[PluginError] = attrs.field(factory=list)  # what non-strict loading left out, and why
    disabled: list[str] = attrs.field(factory=list)  # plugins the user turned off
    disabled_modules: dict[str, str] = attrs.field(factory=dict)  # disabled plugin -> its entry point's module
    distributions: dict[str, tuple[str, str]] = attrs.field(factory=dict)  # plugin -> (distribution, version)

    def get(self, kind: str, name: str) -> Component:
        _check_kind(kind)
        name = self.aliases.get((kind, name), name)
        try:
            return self.components[(kind, name)]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none registered"
            hint = "" if self.names(kind) else " (is promptgen installed? run: pip install -e .)"
            raise UnknownComponentError(f"unknown {kind} '{name}'; available: {available}{hint}"
                                        f"{self.unknown_hint(kind, name)}") from None

    def unknown_hint(self, kind: str | None, name: str) -> str:
        """The end of a message refusing ``name`` of ``kind`` (None: of any kind): why it may be missing (a disabled
        plugin, a plugin that failed to load), else the registered name closest to it ("; did you mean ...?")."""
        hint = ""
        if self.disabled:
            variable = f"{DISABLE_VARIABLE}={','.join(self.disabled)}"
            providers = [plugin for plugin in self.disabled
                         if name == plugin or name in _registered_names(self.disabled_modules.get(plugin))]
            if providers:
                return (f"; {name!r} comes from plugin {providers[0]!r}, which {variable} disables: remove it from "
                        f"{DISABLE_VARIABLE} to use it")
            # A name made from a plugin's (spg-cvae, of the disabled cvae), else any disabled plugin.
            maybe = next((f"the disabled plugin {plugin!r}" for plugin in self.disabled if plugin in name),
                         "a disabled plugin")
            hint = f" ({variable} is set; {name!r} may come from {maybe})"
        if self.errors:
            hint += f" ({len(self.errors)} plugin error(s) left components out: run `promptgen plugins`)"
        names = [n for (k, n) in [*self.components, *self.aliases] if kind is None or k == kind]
        return hint + suggestion(name, names)

    def create(self, kind: str, name: str, **options: Any) -> Any:
        """Build the component ``name`` of ``kind`` with ``options`` passed to its factory."""
        component = self.get(kind, name)
        declared = component.options  # each value its declaration accepts (type, range, choices), or one line
        options.update(check_values(declared, {key: value for key, value in options.items() if key in declared},
                                    component.where, self))
        built = call_factory(component.factory, options)
        if not isinstance(component.factory, type):  # classes were checked at registration
            problems = missing_members(built, PROTOCOLS[kind])
            if problems:
                raise ProtocolError(
                    f"{kind} '{name}' from plugin '{component.plugin}' built an object that does not satisfy "
                    f"the {PROTOCOLS[kind].__name__} protocol: " + "; ".join(problems)
                )
        return built

    def names(self, kind: str) -> list[str]:
        """The registered names of ``kind`` (aliases not included), sorted."""
        _check_kind(kind)
        return sorted(name for (k, name) in self.components if k == kind)

    def has(self, kind: str, name: str) -> bool:
        return (kind, self.aliases.get((kind, name), name)) in self.components

    def canonical(self, kind: str, name: str) -> str:
        """The registered name behind ``name`` (itself, or the name an alias stands for)."""
        return self.get(kind, name).name

    def __iter__(self) -> Iterator[Component]:
        return iter(sorted(self.components.values(), key=lambda c: (KINDS.index(c.kind), c.name)))

    def _add(self, kind: str, name: Any, factory: Any, plugin: str, aliases: tuple = ()) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin}' registered a {kind} with an invalid name {name!r}: use a non-empty string")
        if not callable(factory):
            raise ProtocolError(f"{kind} '{name}' from plugin '{plugin}' is not callable: register a class or factory function")
        aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)
        for taken in (name, *aliases):
            previous = self.components.get((kind, self.aliases.get((kind, taken), taken)))
            if previous is not None:
                raise DuplicateComponentError(
                    f"{kind} '{taken}' is registered by two plugins: '{previous.plugin}' and '{plugin}'; "
                    f"uninstall one of them or ask its author to rename the {kind}"
                )
        # A factory function is checked by what it returns when built; a class is checked now.
        if isinstance(factory, type):
            problems = missing_members(factory, PROTOCOLS[kind])
            if problems:
                protocol = PROTOCOLS[kind].__name__
                raise ProtocolError(
                    f"{kind} '{name}' from plugin '{plugin}' ({factory.__module__}.{factory.__qualname__}) "
                    f"does not satisfy the {protocol} protocol: " + "; ".join(problems)
                )
        self.components[(kind, name)] = Component(kind, name, factory, plugin, aliases)
        for alias in aliases:
            self.aliases[(kind, alias)] = name


def _registered_names(module: str | None) -> set[str]:
    """The names a plugin module registers as string literals (``register("name", ...)``), read from its source
    without importing it: how a message knows that a disabled plugin provides a name."""
    try:
        spec = importlib.util.find_spec(module) if module and "." not in module else None
        with open(spec.origin, encoding="utf-8") as file:
            tree = ast.parse(file.read())
    except (ImportError, OSError, SyntaxError, ValueError, TypeError, AttributeError):
        return set()
    return {call.args[0].value for call in ast.walk(tree)
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "register"
            and call.args and isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)}


def _check_kind(kind: str) -> None:
    if kind not in HOOKS:
        raise PluginError(f"unknown component kind '{kind}'; kinds: {', '.join(KINDS)}")


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP))


def disabled_plugins() -> set[str]:
    """Plugins the user turned off: ``PROMPTGEN_DISABLE_PLUGINS=name,...`` (entry-point or distribution names)."""
    return {name.strip() for name in os.environ.get(DISABLE_VARIABLE, "").split(",") if name.strip()}


def load_registry(
    plugins: Iterable[Any] = (),
    *,
    entry_points: bool = True,
    strict: bool = True,
    disabled: Iterable[str] | None = None,
) -> Registry:
    """Load the plugins of the entry-point group (and ``plugins``, modules or objects) into a new Registry.

    strict: raise the first error met (a plugin that fails to import, a duplicate name, a component
    that breaks its protocol). Otherwise keep loading: a plugin that fails to import is left out, a
    component that clashes with an earlier one or breaks its protocol is not registered, and each
    error is collected in ``registry.errors`` -- what commands want, so that one broken plugin does
    not stop those that never use it.
    disabled: entry-point or distribution names not to load (default: $PROMPTGEN_DISABLE_PLUGINS).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    registry = Registry(pm)
    disabled = disabled_plugins() if disabled is None else set(disabled)

    def fail(error: PluginError) -> None:
        if strict:
            raise error
        registry.errors.append(error)

    if entry_points:
        # promptgen's own plugins first: a third-party plugin that reuses one of their names is the one left out
        ours = hookspecs.PROJECT_NAME
        for ep in sorted(_entry_points(), key=lambda ep: (ep.dist is None or ep.dist.name != ours)):
            distribution = ep.dist.name if ep.dist is not None else "unknown"
            registry.distributions[ep.name] = (distribution, ep.dist.version if ep.dist is not None else "")
            if ep.name in disabled or distribution in disabled:
                registry.disabled.append(ep.name)
                registry.disabled_modules[ep.name] = ep.module
                continue
            try:
                module = ep.load()
            except Exception as error:  # any import failure of a plugin is reported, not fatal to the others
                fail(PluginLoadError(ep.name, distribution, error))
                continue
            _register_plugin(pm, module, ep.name, fail)
    for plugin in plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        if name in disabled:
            registry.disabled.append(name)
            continue
        _register_plugin(pm, plugin, name, fail)

    for kind, hook_name in HOOKS.items():  # methods last: they may look at the other kinds
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            register = functools.partial(_register_one, registry, kind, impl.plugin_name, fail)
            arguments = {"register": register, "registry": registry}
            try:
                impl.function(**{name: arguments[name] for name in impl.argnames if name in arguments})
            except PluginError as error:
                fail(error)
            except Exception as error:
                fail(PluginError(f"plugin '{impl.plugin_name}' raised in {hook_name}: {type(error).__name__}: {error}"))
    return registry


def _register_plugin(pm: pluggy.PluginManager, plugin: Any, name: str, fail: Callable) -> None:
    if pm.is_registered(plugin):
        return  # the same module reached through two entry points
    existing = pm.get_plugin(name)
    if existing is not None:
        fail(PluginError(f"two plugins are named '{name}': {existing!r} and {plugin!r}"))
        return
    try:
        pm.register(plugin, name=name)
        pm.check_pending()  # a misspelled hook is an error now, not a silent no-op
    except pluggy.PluginValidationError as error:
        pm.unregister(name=name)
        fail(PluginError(f"plugin '{name}' is invalid: {error}"))


def _register_one(registry: Registry, kind: str, plugin: str, fail: Callable, name: Any, factory: Any,
                  aliases: tuple = ()) -> None:
    try:
        registry._add(kind, name, factory, plugin, aliases)
    except PluginError as error:
        fail(error)


@functools.cache
def default_registry() -> Registry:
    """The registry of every installed plugin, loaded once per process, for callers that pass none.

    Not strict: a broken plugin is left out and its error kept in ``registry.errors`` (commands warn
    about it), so it breaks only what needs it.
    """
    return load_registry(strict=False)


def create(kind: str, name: str, **options: Any) -> Any:
    """Shortcut: build a component from the installed plugins."""
    return default_registry().create(kind, name, **options)
