"""Lazy factories: register a component by the dotted path of its class, imported when first used.

A plugin's module is imported whenever promptgen loads its plugins -- for ``promptgen --help``,
``promptgen plugins`` and the name checks of every command. A plugin whose ``__init__`` imports its
classes makes all of that pay for torch and open_clip (seconds and ~800 MB). Registering
``lazy("my_plugin.generator:MyGenerator")`` instead keeps the import for the first time the
component is built, its options are read or one of its attributes is asked for. Its description
(the first line of the docstring) is read from the source without importing it.

    @promptgen.hookimpl
    def register_generators(register):
        register("my-generator", lazy("my_plugin.generator:MyGenerator"))

Keywords fix arguments, like ``functools.partial``: ``lazy("my_plugin.method:MyMethod", generator="my-generator")``.
"""

from __future__ import annotations

import ast
import functools
import sys
import importlib
import importlib.util
from typing import Any

from promptgen.errors import PluginError


class LazyFactory:
    """A factory known by ``"package.module:Attribute"``; the module is imported on first use."""

    def __init__(self, target: str, **keywords: Any):
        module, _, attribute = target.partition(":")
        if not module or not attribute:
            raise PluginError(f"lazy factory {target!r}: expected 'package.module:Attribute'")
        self.target, self.keywords = target, keywords

    def load(self) -> Any:
        """The factory itself: the imported attribute, as a functools.partial when keywords are fixed."""
        found = _import(self.target)
        return functools.partial(found, **self.keywords) if self.keywords else found

    def __call__(self, *args: Any, **options: Any) -> Any:
        return self.load()(*args, **options)

    def __getattr__(self, name: str) -> Any:
        # Only for what the instance lacks (presets, rank, classes, unsupported...): the class answers.
        if name.startswith("__") or name in ("target", "keywords"):
            raise AttributeError(name)
        return getattr(_import(self.target), name)

    @property
    def description(self) -> str:
        """The first line of the target's docstring, read from its source file (nothing imported)."""
        return _docstring_line(self.target)

    def __reduce__(self):  # pickles by name (process pools, Ray tasks), with what was set on it
        return _rebuild, (self.target, self.keywords, {k: v for k, v in vars(self).items()
                                                       if k not in ("target", "keywords")})

    def __repr__(self) -> str:
        fixed = "".join(f", {key}={value!r}" for key, value in self.keywords.items())
        return f"lazy({self.target!r}{fixed})"


def lazy(target: str, **keywords: Any) -> LazyFactory:
    """A factory for ``register(name, ...)`` that imports ``target`` ("package.module:Attribute") when first used."""
    return LazyFactory(target, **keywords)


def load_factory(factory: Any) -> Any:
    """``factory`` itself, or what a lazy one stands for."""
    return factory.load() if isinstance(factory, LazyFactory) else factory


def unwrap(factory: Any, *, load: bool = True) -> tuple[Any, dict]:
    """The callable behind ``factory`` and the keywords fixed on the way: the one place a lazy reference and
    ``functools.partial`` layers are taken apart. load=False leaves a lazy factory whose module is not
    imported yet as it is (naming a component must not import its plugin)."""
    fixed: dict = {}
    if isinstance(factory, LazyFactory):
        if not load and factory.target.partition(":")[0] not in sys.modules:
            return factory, dict(factory.keywords)
        factory = factory.load()
    while isinstance(factory, functools.partial):
        fixed = {**factory.keywords, **fixed}
        factory = factory.func
    return factory, fixed


def factory_attribute(factory: Any, attribute: str, default: Any = None) -> Any:
    """An attribute the factory declares (``presets``, ``settings_from``, ``effective_options``, ...): the
    partial's own first, else the class's behind it; ``default`` when none has it."""
    if isinstance(factory, LazyFactory) and attribute in vars(factory):
        return vars(factory)[attribute]
    seen = load_factory(factory)
    while True:
        if attribute in getattr(seen, "__dict__", {}) or (isinstance(seen, type) and hasattr(seen, attribute)):
            return getattr(seen, attribute)
        if not isinstance(seen, functools.partial):
            return getattr(seen, attribute, default)
        seen = seen.func


def _rebuild(target: str, keywords: dict, attributes: dict) -> LazyFactory:
    factory = LazyFactory(target, **keywords)
    vars(factory).update(attributes)
    return factory


@functools.cache
def _import(target: str) -> Any:
    module_name, _, attribute = target.partition(":")
    try:
        found = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise PluginError(f"lazy factory {target!r} cannot be loaded: {type(error).__name__}: {error}") from error
    return found


@functools.cache
def _docstring_line(target: str) -> str:
    module_name, _, attribute = target.partition(":")
    try:
        spec = importlib.util.find_spec(module_name)
        source = open(spec.origin, encoding="utf-8").read() if spec and spec.origin else ""
        tree = ast.parse(source)
    except (ImportError, OSError, SyntaxError, ValueError):
        return ""
    node: Any = tree
    for part in attribute.split("."):
        node = next((child for child in getattr(node, "body", ())
                     if isinstance(child, (ast.ClassDef, ast.FunctionDef)) and child.name == part), None)
        if node is None:
            return ""
    doc = (ast.get_docstring(node) or "").strip()
    return doc.splitlines()[0] if doc else ""
