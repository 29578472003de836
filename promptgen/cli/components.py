"""Commands about the registered components: ``promptgen plugins`` (every component, or one's options) and
``promptgen backbone`` (build a backbone and describe it)."""

from __future__ import annotations

import argparse
import json
import sys

from promptgen.cli.common import backbone_config


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every registered component with its kind, name and the plugin that provides it."""
    from promptgen.files import dumps
    from promptgen.components.registry import default_registry

    registry = default_registry()
    if args.options:
        return _print_options(registry, args.options, args.json)
    def source(plugin: str) -> tuple[str, str]:  # from the entry point's metadata: nothing is imported for it
        return registry.distributions.get(plugin, ("", ""))

    if args.json:
        print(dumps({
            "components": [{"kind": c.kind, "name": c.name, "aliases": list(c.aliases), "plugin": c.plugin,
                            "distribution": source(c.plugin)[0], "version": source(c.plugin)[1],
                            "description": c.description} for c in registry],
            "errors": [str(error) for error in registry.errors],
        }, indent=2))
    else:
        headings = ("kind", "name", "plugin", "distribution")
        rows = [(c.kind, c.name + "".join(f" (= {a})" for a in c.aliases), c.plugin,
                 " ".join(filter(None, source(c.plugin))), c.description) for c in registry]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headings)]
        print("  ".join(f"{h:<{w}}" for h, w in zip(headings, widths)) + "  description")
        for *cells, description in rows:
            print("  ".join(f"{cell:<{w}}" for cell, w in zip(cells, widths)) + f"  {description}")
        for error in registry.errors:
            print(f"error: {error}", file=sys.stderr)
        for name in registry.disabled:
            print(f"disabled: plugin {name} (by $PROMPTGEN_DISABLE_PLUGINS)", file=sys.stderr)
    return 1 if registry.errors else 0


def _print_options(registry, name: str, as_json: bool) -> int:
    """Every component called ``name``: its options with type, default and the presets' values."""
    from promptgen.errors import UnknownComponentError, suggestion
    from promptgen.components.options import RUN_VALUE_NAMES
    from promptgen.components.presets import declared_presets

    found = [c for c in registry if c.name == name or name in c.aliases]
    if not found:
        raise UnknownComponentError(f"no component is named {name!r}; run `promptgen plugins` for the list"
                                    f"{suggestion(name, [n for c in registry for n in (c.name, *c.aliases)])}")
    listing = []
    for component in found:
        presets = declared_presets(component.factory)
        options = [{"name": o.name, "type": o.type_text(), "default": None if o.required else o.default,
                    "required": o.required, "range": o.range_text(), "help": o.help,
                    "run_value": o.name in RUN_VALUE_NAMES and not (component.kind == "dataset" and o.name == "seed"),
                    "presets": {p: v[o.name] for p, v in presets.items() if o.name in v}}
                   for o in component.options.values()]
        listing.append({"kind": component.kind, "name": component.name, "plugin": component.plugin,
                        "options": options})
    if as_json:
        print(json.dumps(listing, indent=2, default=repr))
        return 0
    for entry in listing:
        print(f"{entry['kind'].replace('_', ' ')} {entry['name']} (plugin {entry['plugin']}): "
              f"{len(entry['options'])} option{'s' if len(entry['options']) != 1 else ''}")
        for option in entry["options"]:
            default = "(required)" if option["required"] else repr(option["default"])
            presets = ", ".join(f"{p}: {v!r}" for p, v in option["presets"].items())
            accepted = f" ({option['range']})" if option["range"] else ""
            print(f"  {option['name']:<18} {option['type'] + accepted:<28} default {default}"
                  + (f"; {presets}" if presets else "") + (" [run value]" if option["run_value"] else ""))
            if option["help"]:
                print(f"  {'':<18} {option['help']}")
    return 0


def cmd_backbone(args: argparse.Namespace) -> int:
    """Build a backbone and print what it is: fingerprint, widths, device."""
    backbone = backbone_config(args).build()
    info = {
        "backbone": args.backbone,
        "model": args.model,
        "pretrained": args.pretrained,
        "fingerprint": backbone.fingerprint,
        "ctx_dim": backbone.ctx_dim,
        "embed_dim": backbone.embed_dim,
        "context_length": backbone.context_length,
        "logit_scale": round(backbone.logit_scale, 4),
        "device": str(backbone.device),
    }
    print(json.dumps(info, indent=2) if args.json else "\n".join(f"{k:>14}: {v}" for k, v in info.items()))
    return 0
