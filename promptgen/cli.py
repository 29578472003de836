"""The ``promptgen`` command line. Each subcommand is one small function; errors print without tracebacks."""

from __future__ import annotations

import argparse
import json
import sys

from promptgen import __version__, defaults
from promptgen.errors import PromptgenError
from promptgen.presets import PRESET_CHOICES

DESCRIPTION = """\
promptgen: generative soft-prompt domain generalization (SPG and friends) on CLIP-style models.

Every component (backbone, prompt learner, generator, dataset, launcher, method) is a plugin
registered through the 'promptgen' entry-point group; the built-in ones register the same way.
The benchmark harness is a separate entry: python -m benchmarks.run
"""


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every registered component with its kind, name and the plugin that provides it."""
    from promptgen.registry import load_registry

    registry = load_registry(strict=False)
    if args.options:
        return _print_options(registry, args.options, args.json)
    rows = [(c.kind, c.name + "".join(f" (= {a})" for a in c.aliases), c.plugin, c.description) for c in registry]
    if args.json:
        print(json.dumps({
            "components": [{"kind": c.kind, "name": c.name, "aliases": list(c.aliases), "plugin": c.plugin,
                            "description": c.description} for c in registry],
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


def _print_options(registry, name: str, as_json: bool) -> int:
    """Every component called ``name``: its options with type, default and the presets' values."""
    from promptgen.errors import UnknownComponentError
    from promptgen.presets import declared_presets

    found = [c for c in registry if c.name == name or name in c.aliases]
    if not found:
        raise UnknownComponentError(f"no component is named {name!r}; run `promptgen plugins` for the list")
    listing = []
    for component in found:
        presets = declared_presets(component.factory)
        options = [{"name": o.name, "type": o.type_text(), "default": None if o.required else o.default,
                    "required": o.required, "presets": {p: v[o.name] for p, v in presets.items() if o.name in v}}
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
            print(f"  {option['name']:<18} {option['type']:<22} default {default}" + (f"; {presets}" if presets else ""))
    return 0


def cmd_backbone(args: argparse.Namespace) -> int:
    """Build a backbone and print what it is: fingerprint, widths, device."""
    backbone = _backbone_config(args).build()
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


def cmd_cache_info(args: argparse.Namespace) -> int:
    """Show what the feature cache holds: entries and size per backbone fingerprint, dataset and transform."""
    from promptgen.cache import FeatureCache

    with FeatureCache(args.cache_dir) as cache:
        rows = cache.info()
    if args.json:
        print(json.dumps({"path": str(cache.path), "groups": rows}, indent=2))
        return 0
    print(f"feature cache: {cache.path}")
    columns = ("fingerprint", "dataset", "transform", "views", "entries", "bytes")
    table = [columns] + [tuple(str(row[c]) for c in columns) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(f"{cell:<{width}}" for cell, width in zip(line, widths)).rstrip())
    print(f"{sum(r['entries'] for r in rows)} entries, {sum(r['bytes'] for r in rows) / 2**20:.1f} MiB")
    return 0


def cmd_cache_verify(args: argparse.Namespace) -> int:
    """Check that every cached entry decodes, has its backbone's dim and finite values (exit status 1 if not)."""
    from promptgen.cache import FeatureCache

    with FeatureCache(args.cache_dir) as cache:
        problems = cache.verify()
        entries = sum(row["entries"] for row in cache.info())
    for problem in problems:
        print(f"problem: {problem}")
    if problems:
        print(f"{len(problems)} problems in {cache.path}; remove them with `promptgen cache clear`", file=sys.stderr)
        return 1
    print(f"ok: {entries} entries in {cache.path}")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """Delete cached features of one backbone (fingerprint or its prefix) and/or one dataset, or --all."""
    from promptgen.cache import FeatureCache
    from promptgen.errors import ConfigError

    filtered = args.backbone is not None or args.dataset is not None
    if filtered == args.all:
        raise ConfigError("cache clear: choose what to delete: --backbone and/or --dataset, or --all for everything")
    with FeatureCache(args.cache_dir) as cache:
        removed = cache.clear(args.backbone, args.dataset)
    print(f"removed {removed} entries from {cache.path}")
    return 0


def _backbone_config(args: argparse.Namespace):
    from promptgen.config import BackboneConfig

    return BackboneConfig(name=args.backbone, model=args.model, pretrained=args.pretrained, device=args.device,
                          precision=args.precision)


def method_overrides(registry, method: str, components: dict[str, str | None]) -> dict:
    """``--learner`` / ``--generator`` as options of the method, which must declare them."""
    from promptgen.errors import ConfigError

    chosen = {option: name for option, name in components.items() if name is not None}
    if not chosen:
        return {}
    component = registry.get("method", method)
    for option in chosen:
        if option not in component.options:
            raise ConfigError(f"method {method!r} takes no --{option}; its options: "
                              f"{', '.join(component.options) or 'none'}")
    return {component.name: chosen}


def parse_settings(settings: list[str] | None) -> dict:
    """``--set component.option=value`` (repeatable) as overrides: {component: {option: value}}.

    The value is read as a TOML value (2, 2e-3, true, "text", [1, 2]); anything that is not one is
    taken as text, so ``--set coop.ctx_init=a photo of a`` needs no quotes.
    """
    from promptgen.errors import ConfigError

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
    merged: dict[str, dict] = {}
    for part in parts:
        for component, values in part.items():
            merged.setdefault(component, {}).update(values)
    return merged


def cmd_train(args: argparse.Namespace) -> int:
    """Train one DG run of a method (e.g. SPG: stage I -> stage II -> test on each target) and write its directory."""
    from pathlib import Path

    from promptgen.config import RunConfig
    from promptgen.engine import run
    from promptgen.registry import default_registry

    registry = default_registry()
    overrides = merge_overrides(parse_settings(args.set),
                                method_overrides(registry, args.method, {"learner": args.learner,
                                                                         "generator": args.generator}))
    config = RunConfig(dataset=args.dataset, targets=args.target, sources=args.sources,
                       target_dataset=args.target_dataset, method=args.method, seed=args.seed,
                       preset=args.preset, backbone=_backbone_config(args), views=args.views,
                       overrides=overrides, cache_dir=args.cache_dir, data_root=args.data_root,
                       num_workers=args.workers)
    targets = "+".join(args.target)
    out = Path(args.out) if args.out else Path("runs") / args.dataset / targets / f"{args.method}-seed{args.seed}"
    metrics = run(config, out, registry=registry, progress=not args.quiet)
    stages = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in metrics["seconds"].items())
    tested = ", ".join(f"{domain} {100 * value:.2f}%" for domain, value in metrics["test_accuracy"].items())
    print(f"{args.method} on {args.dataset}, sources {'+'.join(metrics['sources'])}: test accuracy {tested} "
          f"(source val {100 * metrics['val_accuracy']:.2f}%; {stages})")
    print(f"wrote {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-evaluate a run directory from disk (prompt labels, generator, cached features)."""
    import json
    from pathlib import Path

    from promptgen.engine import evaluate_run

    result = evaluate_run(args.run_dir, progress=not args.quiet)
    saved = json.loads((Path(args.run_dir) / "metrics.json").read_text())
    print(json.dumps({**result, "saved_test_accuracy": saved["test_accuracy"]}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptgen", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"promptgen {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    plugins = commands.add_parser("plugins", help=cmd_plugins.__doc__, description=cmd_plugins.__doc__)
    plugins.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    plugins.add_argument("--options", metavar="NAME", help="list the options of the component(s) called NAME, "
                         "with their types, defaults and preset values")
    plugins.set_defaults(run=cmd_plugins)

    backbone = commands.add_parser("backbone", help=cmd_backbone.__doc__, description=cmd_backbone.__doc__)
    add_backbone_arguments(backbone)
    backbone.add_argument("--json", action="store_true", help="print one JSON object")
    backbone.set_defaults(run=cmd_backbone)

    cache = commands.add_parser("cache", help="inspect, check or clear the LMDB feature cache",
                                description="The LMDB feature cache: image features per backbone, dataset and view.")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    cache_info = actions.add_parser("info", help=cmd_cache_info.__doc__, description=cmd_cache_info.__doc__)
    cache_info.add_argument("--json", action="store_true", help="print one JSON object")
    cache_info.set_defaults(run=cmd_cache_info)
    cache_verify = actions.add_parser("verify", help=cmd_cache_verify.__doc__, description=cmd_cache_verify.__doc__)
    cache_verify.set_defaults(run=cmd_cache_verify)
    cache_clear = actions.add_parser("clear", help=cmd_cache_clear.__doc__, description=cmd_cache_clear.__doc__)
    cache_clear.add_argument("--backbone", metavar="FINGERPRINT", help="a backbone fingerprint or its prefix, "
                             "e.g. tiny-clip-digits (see `promptgen cache info`)")
    cache_clear.add_argument("--dataset", metavar="NAME", help="a dataset name, e.g. digits-dg")
    cache_clear.add_argument("--all", action="store_true", help="delete every entry (required without a filter)")
    cache_clear.set_defaults(run=cmd_cache_clear)
    for action in (cache_info, cache_verify, cache_clear):
        action.add_argument("--cache-dir", metavar="DIR", default=None,
                            help="cache root (default: $PROMPTGEN_CACHE_DIR, else ~/.cache/promptgen)")

    train = commands.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    train.add_argument("--dataset", default=defaults.DATASET, help="dataset plugin (default: %(default)s)")
    train.add_argument("--target", required=True, nargs="+", metavar="DOMAIN",
                       help="the target domain(s) to test on")
    train.add_argument("--sources", nargs="+", metavar="DOMAIN", default=None,
                       help="source domains (default: every domain that is not a target)")
    train.add_argument("--target-dataset", default=None, metavar="NAME",
                       help="cross-dataset: the targets are domains of this dataset (shared classes only)")
    train.add_argument("--method", default=defaults.METHOD,
                       help="a registered method (default: %(default)s); `promptgen plugins` lists them")
    train.add_argument("--learner", default=None, metavar="NAME",
                       help="the prompt learner of a method that takes one (e.g. SPG's stage I)")
    train.add_argument("--generator", default=None, metavar="NAME",
                       help="the generator of a method that takes one (e.g. SPG's stage II)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--preset", default="auto", choices=PRESET_CHOICES,
                       help="cpu, gpu (the official hyperparameters) or auto (gpu on CUDA, else cpu)")
    train.add_argument("--views", type=int, default=None, help="augmented views per training image (default: preset)")
    add_set_argument(train)
    train.add_argument("--out", default=None, help="run directory (default: runs/DATASET/TARGETS/METHOD-seedN)")
    train.add_argument("--data-root", default=None, help="where the dataset lives (datasets that read from disk)")
    train.add_argument("--workers", type=int, default=0, help="DataLoader workers for feature extraction")
    add_backbone_arguments(train)
    evaluate = commands.add_parser("evaluate", help=cmd_evaluate.__doc__, description=cmd_evaluate.__doc__)
    evaluate.add_argument("run_dir", help="a directory written by promptgen train")
    train.add_argument("--cache-dir", default=None,
                       help="feature cache root (default: $PROMPTGEN_CACHE_DIR, else ~/.cache/promptgen)")
    for command, run in ((train, cmd_train), (evaluate, cmd_evaluate)):
        command.add_argument("--quiet", action="store_true", help="no progress bars")
        command.set_defaults(run=run)

    # Plugins may add their own commands (e.g. `promptgen world` from the digits plugin).
    from promptgen.registry import load_registry

    load_registry(strict=False).plugin_manager.hook.add_commands(commands=commands)
    return parser


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", metavar="COMPONENT.OPTION=VALUE",
                        help="set a component's option on top of the preset, e.g. --set coop.epochs=2 "
                             "--set cgan.batch_size=64 (repeatable; `promptgen plugins --options NAME` lists them)")


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose a backbone; shared by every command that builds one."""
    parser.add_argument(
        "--backbone", default=defaults.BACKBONE,
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
