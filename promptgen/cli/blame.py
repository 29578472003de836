"""Which plugin is to blame for an error promptgen did not expect: the CLI's messages name it, its distribution, the
component and the file and line, as a bug to report to that plugin's authors (promptgen.cli.failures.describe)."""

from __future__ import annotations

import os
import sys
import traceback

from promptgen.components.lazy import unwrap
from promptgen.components.registry import Component, Registry, default_registry


def plugin_at_fault(error: BaseException) -> str | None:
    """How a message names the plugin whose code raised ``error`` (an error promptgen did not expect):
    "plugin 'x' (distribution x-dist 1.0; dataset 'y') at file.py:12"; None when promptgen's own code raised it.

    The innermost frame of the traceback that is promptgen's or an installed plugin's decides; library frames
    (torch, numpy, ...) are passed over. Nothing is imported for it: the plugins are those the command loaded.
    """
    try:
        registry = default_registry()
    except Exception:  # naming a culprit must never hide the error itself
        return None
    modules = {}  # a plugin's module -> the plugin's name
    for name, plugin in registry.plugin_manager.list_name_plugin():
        module = plugin.__name__ if isinstance(plugin, type(sys)) else type(plugin).__module__
        modules[module] = name
    frames = list(traceback.walk_tb(error.__traceback__))[::-1]  # innermost first
    for index, (frame, line) in enumerate(frames):
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] in ("promptgen", "benchmarks"):
            return None  # promptgen's own code raised it (called by a plugin or not)
        owner = _owner(module, modules)
        if owner is not None:
            break
    else:
        return None
    distribution, version = registry.distributions.get(owner, ("", ""))
    facts = [f"distribution {distribution} {version}".rstrip()] if distribution else []
    component = _component_raising(registry, owner, [outer for outer, _ in frames[index:]])
    if component is not None:
        facts.append(f"{component.kind.replace('_', ' ')} {component.name!r}")
    where = f"{os.path.basename(frame.f_code.co_filename)}:{line}"
    return f"plugin {owner!r}" + (f" ({'; '.join(facts)})" if facts else "") + f" at {where}"


def _owner(module: str, modules: dict[str, str]) -> str | None:
    """The plugin whose module is ``module`` or a package holding it (the longest such), else a plugin of the same
    top-level package (a plugin registered as ``acme.plugin`` owns ``acme.datasets`` too), else None."""
    inside = [m for m in modules if module == m or module.startswith(m + ".")]
    if inside:
        return modules[max(inside, key=len)]
    top = module.split(".")[0]
    return next((plugin for m, plugin in sorted(modules.items()) if m.split(".")[0] == top), None)


def _component_raising(registry: Registry, plugin: str, frames: list) -> Component | None:
    """The component of ``plugin`` whose method raised: the class of a ``self`` in the frames, innermost first."""
    classes = {}
    for component in registry:
        if component.plugin == plugin:
            factory, _ = unwrap(component.factory, load=False)  # only if imported already: naming imports nothing
            if isinstance(factory, type):
                classes.setdefault(factory, component)
    for frame in frames:
        owner = frame.f_locals.get("self")
        if owner is not None and type(owner) in classes:
            return classes[type(owner)]
    return None
