"""The ``promptgen`` command line. Each subcommand is one small function; errors print without tracebacks."""

from __future__ import annotations

import argparse
import json
import sys

from promptgen import __version__
from promptgen.errors import PromptgenError

DESCRIPTION = """\
promptgen: generative soft-prompt domain generalization (SPG and friends) on CLIP-style models.

Every component (backbone, prompt learner, generator, dataset, launcher) is a plugin registered
through the 'promptgen' entry-point group; the built-in ones register the same way.
The benchmark harness is a separate entry: python -m benchmarks.run
"""


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every registered component with its kind, name and the plugin that provides it."""
    from promptgen.registry import load_registry

    registry = load_registry(strict=False)
    rows = [(c.kind, c.name, c.plugin, c.description) for c in registry]
    if args.json:
        print(json.dumps({
            "components": [dict(zip(("kind", "name", "plugin", "description"), row)) for row in rows],
            "errors": [str(error) for error in registry.errors],
        }, indent=2))
    else:
        widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("kind", "name", "plugin"))]
        print(f"{'kind':<{widths[0]}}  {'name':<{widths[1]}}  {'plugin':<{widths[2]}}  description")
        for kind, name, plugin, description in rows:
            print(f"{kind:<{widths[0]}}  {name:<{widths[1]}}  {plugin:<{widths[2]}}  {description}")
        for error in registry.errors:
            print(f"error: {error}", file=sys.stderr)
    return 1 if registry.errors else 0


def cmd_backbone(args: argparse.Namespace) -> int:
    """Build a backbone and print what it is: fingerprint, widths, device."""
    from promptgen.config import BackboneConfig

    backbone = BackboneConfig(
        model=args.model, pretrained=args.pretrained, name=args.backbone, device=args.device, precision=args.precision
    ).build()
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptgen", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"promptgen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    plugins = commands.add_parser("plugins", help=cmd_plugins.__doc__, description=cmd_plugins.__doc__)
    plugins.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    plugins.set_defaults(run=cmd_plugins)

    backbone = commands.add_parser("backbone", help=cmd_backbone.__doc__, description=cmd_backbone.__doc__)
    add_backbone_arguments(backbone)
    backbone.add_argument("--json", action="store_true", help="print one JSON object")
    backbone.set_defaults(run=cmd_backbone)

    # Plugins may add their own commands (e.g. `promptgen world` from the digits plugin).
    from promptgen.registry import load_registry

    load_registry(strict=False).plugin_manager.hook.add_commands(commands=commands)
    return parser


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose a backbone; shared by every command that builds one."""
    parser.add_argument(
        "--backbone", default="tiny-clip-digits",
        help="backbone plugin (default: %(default)s, shipped with promptgen; openclip for any open_clip model)",
    )
    parser.add_argument("--model", default=None, help="model name for --backbone openclip, e.g. ViT-B-16")
    parser.add_argument(
        "--pretrained",
        default=None,
        help="pretrained tag (e.g. openai) or a local checkpoint file (.safetensors, state dict, OpenAI .pt); "
        "omit for random weights",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except PromptgenError as error:
        print(f"promptgen: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
