"""The ``promptgen`` command line. Each subcommand is one small function; errors print without tracebacks."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from promptgen import __version__

from promptgen.runs import defaults
from promptgen.components.presets import EPOCHS, PRESET_CHOICES

DESCRIPTION = """\
promptgen: generative soft-prompt domain generalization (SPG and friends) on CLIP-style models.

Every component (backbone, prompt learner, generator, dataset, launcher, method) is a plugin
registered through the 'promptgen' entry-point group; the built-in ones register the same way.
The benchmark harness is a separate entry: python -m benchmarks.run
"""


def cmd_plugins(args: argparse.Namespace) -> int:
    """List every registered component with its kind, name and the plugin that provides it."""
    from promptgen.storage.files import dumps
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
    from promptgen.components.presets import declared_presets

    found = [c for c in registry if c.name == name or name in c.aliases]
    if not found:
        raise UnknownComponentError(f"no component is named {name!r}; run `promptgen plugins` for the list"
                                    f"{suggestion(name, [n for c in registry for n in (c.name, *c.aliases)])}")
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
    from promptgen.storage.cache import FeatureCache

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
    """Check every cached entry (checksum, width, finite values) and the database's structure (exit status 1 if
    anything is wrong); --repair drops what is bad."""
    from promptgen.storage.cache import DamagedCacheError, FeatureCache, salvage_files

    try:
        cache = FeatureCache(args.cache_dir)
    except DamagedCacheError as error:  # LMDB must not even map it: report, and rebuild from its bytes if asked
        print(f"problem: {error}")
        if not args.repair:
            print("promptgen cache verify --repair rebuilds it from its intact entries", file=sys.stderr)
            return 1
        result = salvage_files(args.cache_dir)
        print(f"repaired: rebuilt the database from its intact pages; {result['kept']} entries kept, "
              f"{result['dropped']} dropped (runs compute what is missing again)")
        return 0
    with cache:
        problems = cache.verify()
        for problem in problems[:args.show]:
            print(f"problem: {problem}")
        if len(problems) > args.show:
            print(f"... and {len(problems) - args.show} more (--show N lists more)")
        if problems and args.repair:
            result = cache.repair()
            how = "rebuilt the database from its readable entries" if result["rebuilt"] else "dropped the bad entries"
            print(f"repaired {cache.path}: {how}; {result['dropped']} dropped, {result['kept']} kept (what was "
                  f"dropped is computed again when a run needs it)")
            return 0
        entries = sum(row["entries"] for row in cache.info()) if not problems else None
    if problems:
        print(f"{len(problems)} problem(s) in {cache.path}: `promptgen cache verify --repair` drops the bad entries, "
              f"`promptgen cache clear --all` starts afresh", file=sys.stderr)
        return 1
    print(f"ok: {entries} entries in {cache.path}")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """Delete cached features of one backbone (fingerprint or its prefix) and/or one dataset, or --all (which works
    on a damaged cache too)."""
    from promptgen.storage.cache import FeatureCache, clear_files
    from promptgen.errors import CacheError, ConfigError

    filtered = args.backbone is not None or args.dataset is not None
    if filtered == args.all:
        raise ConfigError("cache clear: choose what to delete: --backbone and/or --dataset, or --all for everything")
    try:
        with FeatureCache(args.cache_dir) as cache:
            removed = cache.clear(args.backbone, args.dataset)
    except CacheError as error:
        if not args.all:
            raise CacheError(f"{error} (a damaged cache can only be cleared whole: --all)") from None
        path = clear_files(args.cache_dir)
        print(f"the cache could not be read ({error}); deleted its files in {path}")
        return 0
    print(f"removed {removed} entries from {cache.path}")
    if args.all:  # every stored stage-I prompt label goes with the features
        import shutil

        from promptgen.storage.label_store import store_dir

        labels = store_dir(args.cache_dir)
        if labels.is_dir():
            count = sum(1 for _ in labels.iterdir())
            shutil.rmtree(labels)
            print(f"removed {count} stored prompt labels from {labels}")
    return 0


def _backbone_config(args: argparse.Namespace):
    from promptgen.runs.config import BackboneConfig

    return BackboneConfig(name=args.backbone, model=args.model, pretrained=args.pretrained, device=args.device,
                          precision=args.precision)


# --learner and --generator: the kind of component each names
COMPONENT_FLAGS = {"learner": "prompt_learner", "generator": "generator"}


def method_overrides(registry, method: str, components: dict[str, str | None]) -> dict:
    """``--learner`` / ``--generator`` as options of the method, which must declare them; the names they give
    must be registered (checked here, before torch loads)."""
    from promptgen.errors import ConfigError

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


def cmd_cache_extract(args: argparse.Namespace) -> int:
    """Compute a dataset's features ahead of the runs: whole, one shard (--shard I/N, or torchrun's RANK and
    WORLD_SIZE), or --shards N run by a launcher (processes, ray) and merged."""
    import os

    import attrs

    from promptgen.runs.device import resolve_device
    from promptgen.errors import ConfigError
    from promptgen.storage.extraction import ExtractJob, extract, merge
    from promptgen.components.presets import resolve_preset, run_preset
    from promptgen.components.registry import default_registry

    registry = default_registry()
    if not registry.has("dataset", args.dataset):
        raise ConfigError(f"unknown dataset {args.dataset!r}; registered: {', '.join(registry.names('dataset'))}"
                          f"{registry.unknown_hint('dataset', args.dataset)}")
    spec = args.shard or (f"{os.environ.get('RANK', '0')}/{os.environ['WORLD_SIZE']}" if "WORLD_SIZE" in os.environ
                          else None)
    if spec and args.shards:
        raise ConfigError("cache extract: --shard I/N runs one shard; --shards N runs them all: choose one")
    try:
        shard, shards = (int(part) for part in spec.split("/")) if spec else (0, args.shards or 1)
    except ValueError:
        raise ConfigError(f"--shard must be I/N, got {spec!r}") from None
    backbone = _backbone_config(args)
    views = args.views or run_preset(resolve_preset("auto", resolve_device(backbone.device).type))["views"]
    job = ExtractJob(dataset=args.dataset, backbone=attrs.asdict(backbone), cache_dir=args.cache_dir,
                     data_root=args.data_root, dataset_options=parse_settings(args.set).get(args.dataset, {}),
                     domains=tuple(args.domains) if args.domains else None, views=views, shard=shard, shards=shards,
                     num_workers=args.workers, progress=not args.quiet)
    if spec or shards == 1:  # this process's part
        result = extract(job, registry)
        print(f"{args.dataset}: {result['features']} features of {result['samples']} samples in {result['root']}"
              + (f" (shard {shard}/{shards}; `promptgen cache merge` once every shard is done)" if spec else ""))
        return 0
    launcher = registry.create("launcher", args.launcher, **{k: v for k, v in (
        ("workers", args.launcher_workers), ("address", args.ray_address), ("progress", not args.quiet))
        if v is not None and k in registry.get("launcher", args.launcher).options})
    jobs = [attrs.evolve(job, shard=i, progress=False) for i in range(shards)]
    results = launcher.run(extract, jobs)
    merged = merge(args.cache_dir)
    print(f"{args.dataset}: {sum(r['features'] for r in results)} features in {shards} shards ({args.launcher}); "
          f"merged {merged['copied']} entries into the cache" + (f", {merged['damaged']} damaged left out"
                                                                 if merged["damaged"] else ""))
    return 0


def cmd_cache_merge(args: argparse.Namespace) -> int:
    """Fold the shards that `promptgen cache extract --shard` wrote into the cache (each entry checked)."""
    from promptgen.storage.extraction import merge

    result = merge(args.cache_dir, keep=args.keep)
    if not result["shards"]:
        print("no shards to merge")
        return 0
    print(f"merged {result['shards']} shard(s): {result['copied']} entries"
          + (f"; {result['damaged']} damaged entries left out (those shards are kept)" if result["damaged"] else ""))
    return 1 if result["damaged"] else 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train one DG run of a method (e.g. SPG: stage I -> stage II -> test on each target) and write its directory."""
    from pathlib import Path

    from promptgen.runs.config import RunConfig, check_names
    from promptgen.components.registry import default_registry

    registry = default_registry()
    overrides = merge_overrides(parse_settings(args.set),
                                method_overrides(registry, args.method, {"learner": args.learner,
                                                                         "generator": args.generator}))
    config = RunConfig(dataset=args.dataset, targets=args.target, sources=args.sources,
                       target_dataset=args.target_dataset, method=args.method, seed=args.seed,
                       preset=args.preset, backbone=_backbone_config(args), views=args.views,
                       epoch=args.epoch, overrides=overrides, cache_dir=args.cache_dir, data_root=args.data_root,
                       num_workers=args.workers)
    check_names(config, registry)  # a misspelt name fails here, before torch and the backbone load
    from promptgen.runs.engine import run

    targets = "+".join(args.target)
    out = Path(args.out) if args.out else Path("runs") / args.dataset / targets / f"{args.method}-seed{args.seed}"
    if args.dry_run:
        from promptgen.runs import dry_run
        from promptgen.runs.engine import check, plan_run

        checked = check(config, registry)
        print(dry_run.text(dry_run.describe(config, registry, checked, plan_run(config, registry, checked, False), out)))
        return 0
    if args.log == "tensorboard":
        from promptgen.toolkit.curves import require_tensorboard

        require_tensorboard()  # before training, not after it
    metrics = run(config, out, registry=registry, progress=not args.quiet, force=args.force)
    if args.log == "tensorboard":
        from promptgen.toolkit.curves import TENSORBOARD_DIR, write_tensorboard

        if write_tensorboard(out, out / TENSORBOARD_DIR):
            print(f"TensorBoard events: tensorboard --logdir {out / TENSORBOARD_DIR}")
    stages = ", ".join(f"{stage} {seconds:.1f}s" for stage, seconds in metrics["seconds"].items())
    tested = ", ".join(f"{domain} {100 * value:.2f}%" for domain, value in metrics["test_accuracy"].items())
    print(f"{args.method} on {args.dataset}, sources {'+'.join(metrics['sources'])}: test accuracy {tested} "
          f"(source val {100 * metrics['val_accuracy']:.2f}%; {stages})")
    print(f"wrote {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Re-evaluate a run directory from disk (prompt labels, generator, cached features)."""
    from pathlib import Path

    from promptgen.runs.engine import evaluate_run
    from promptgen.storage.files import dumps, read_json

    result = evaluate_run(args.run_dir, progress=not args.quiet)
    saved = read_json(Path(args.run_dir) / "metrics.json", "run metrics")
    print(dumps({**result, "saved_test_accuracy": saved.get("test_accuracy")}, indent=2))
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong and where to look, no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Warnings (and with --verbose, progress notes) of every module, as 'promptgen: warning: ...' lines."""
    import logging

    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("promptgen: %(levelname)s: %(message)s"))
    root = logging.getLogger()  # promptgen, the harness and the plugins log under their module names
    root.handlers[:] = [handler]
    root.setLevel(level)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="promptgen", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"promptgen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

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
    cache_verify.add_argument("--repair", action="store_true", help="drop the bad entries (rebuild a damaged database "
                              "from what can be read); runs compute them again when they need them")
    cache_verify.add_argument("--show", type=int, default=20, metavar="N", help="problems to list (default: 20)")
    cache_verify.set_defaults(run=cmd_cache_verify)
    cache_clear = actions.add_parser("clear", help=cmd_cache_clear.__doc__, description=cmd_cache_clear.__doc__)
    cache_clear.add_argument("--backbone", metavar="FINGERPRINT", help="a backbone fingerprint or its prefix, "
                             "e.g. tiny-clip-digits (see `promptgen cache info`)")
    cache_clear.add_argument("--dataset", metavar="NAME", help="a dataset name, e.g. digits-dg")
    cache_clear.add_argument("--all", action="store_true", help="delete every entry (required without a filter)")
    cache_clear.set_defaults(run=cmd_cache_clear)
    cache_extract = actions.add_parser("extract", help=cmd_cache_extract.__doc__, description=cmd_cache_extract.__doc__)
    cache_extract.add_argument("--dataset", default=defaults.DATASET, help="dataset plugin (default: %(default)s)")
    cache_extract.add_argument("--domains", nargs="+", metavar="DOMAIN", help="only these domains (default: all)")
    cache_extract.add_argument("--views", type=int, default=None, help="train views (default: the preset's)")
    cache_extract.add_argument("--shard", metavar="I/N", help="compute shard I of N into its own LMDB under "
                               "<cache>/shards/ (default: torchrun's RANK/WORLD_SIZE when set)")
    cache_extract.add_argument("--shards", type=int, metavar="N", help="run all N shards with --launcher, then merge")
    cache_extract.add_argument("--launcher", default=defaults.EXTRACT_LAUNCHER,
                               help="launcher plugin for --shards (default: %(default)s; or ray)")
    cache_extract.add_argument("--launcher-workers", type=int, default=None, metavar="W",
                               help="processes launcher: worker processes (default: 2)")
    cache_extract.add_argument("--ray-address", default=None, help="ray launcher: a running cluster (default: a "
                               "local Ray instance); every node must see --cache-dir (shared storage)")
    cache_extract.add_argument("--data-root", default=None, help="where the dataset lives")
    cache_extract.add_argument("--workers", type=int, default=0, help="DataLoader workers per shard")
    add_set_argument(cache_extract)
    add_backbone_arguments(cache_extract)
    cache_extract.set_defaults(run=cmd_cache_extract)
    cache_merge = actions.add_parser("merge", help=cmd_cache_merge.__doc__, description=cmd_cache_merge.__doc__)
    cache_merge.add_argument("--keep", action="store_true", help="keep the shards after merging them")
    cache_merge.set_defaults(run=cmd_cache_merge)
    for action in (cache_info, cache_verify, cache_clear, cache_extract, cache_merge):
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
    train.add_argument("--epoch", default=None, choices=EPOCHS,
                       help="what a training epoch iterates: images (each once, through one of its views: the official "
                       "procedure, the gpu preset's) or views (every cached view: the cpu preset's)")
    add_set_argument(train)
    train.add_argument("--dry-run", action="store_true", help="print the resolved run (splits, sample counts, every "
                       "component's options, outputs) and its estimated cost; train nothing")
    train.add_argument("--out", default=None, help="run directory (default: runs/DATASET/TARGETS/METHOD-seedN)")
    train.add_argument("--force", action="store_true", help="replace the run directory if it exists (whole)")
    add_log_argument(train)
    train.add_argument("--data-root", default=None, help="where the dataset lives (datasets that read from disk)")
    train.add_argument("--workers", type=int, default=0, help="DataLoader workers for feature extraction")
    add_backbone_arguments(train)
    evaluate = commands.add_parser("evaluate", help=cmd_evaluate.__doc__, description=cmd_evaluate.__doc__)
    evaluate.add_argument("run_dir", help="a directory written by promptgen train")
    train.add_argument("--cache-dir", default=None,
                       help="feature cache root (default: $PROMPTGEN_CACHE_DIR, else ~/.cache/promptgen)")
    for command, run in ((train, cmd_train), (evaluate, cmd_evaluate)):
        command.set_defaults(run=run)

    add_plugin_commands(commands)
    for command in leaf_parsers(parser):
        add_output_arguments(command)
    return parser


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser of a command that runs (``cache info``, ``train``, a plugin's ``world``), not the groups."""
    groups = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    if not groups:
        return [parser]
    return [leaf for group in groups for child in dict.fromkeys(group.choices.values()) for leaf in leaf_parsers(child)]


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose and --quiet on every command (one place, so a plugin's commands get them too)."""
    taken = {option for action in parser._actions for option in action.option_strings}
    if "--quiet" not in taken:
        parser.add_argument("--quiet", action="store_true", help="no progress bars; errors only")
    if "--verbose" not in taken:
        parser.add_argument("-v", "--verbose", action="store_true", help="also log progress notes (INFO)")


def add_plugin_commands(commands) -> None:
    """Commands that plugins add (e.g. `promptgen world`); one that raises is reported and left out."""
    from promptgen.errors import PluginError
    from promptgen.components.registry import default_registry

    registry = default_registry()
    for impl in registry.plugin_manager.hook.add_commands.get_hookimpls():
        try:
            impl.function(commands=commands)
        except Exception as error:  # a broken plugin must not take --help and every other command with it
            registry.errors.append(PluginError(f"plugin '{impl.plugin_name}' raised in add_commands: "
                                               f"{type(error).__name__}: {error}; its commands are left out"))


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", choices=("tensorboard",), default=None,
                        help="also write the per-epoch curves as TensorBoard events into <run dir>/tensorboard "
                             "(needs: pip install tensorboard); every run writes curves.png and history.json")


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


# Fields of the configs as the command line spells them, so that messages name what the user typed.
FLAGS = {"RunConfig.seed": "--seed", "RunConfig.views": "--views", "RunConfig.epoch": "--epoch",
         "RunConfig.targets": "--target",
         "RunConfig.sources": "--sources", "RunConfig.method": "--method", "RunConfig.preset": "--preset",
         "RunConfig.dataset": "--dataset", "RunConfig.target_dataset": "--target-dataset",
         "RunConfig.num_workers": "--workers", "RunConfig.overrides": "--set", "RunConfig.data_root": "--data-root",
         "RunConfig.cache_dir": "--cache-dir", "BackboneConfig.name": "--backbone", "BackboneConfig.model": "--model",
         "BackboneConfig.pretrained": "--pretrained", "BackboneConfig.device": "--device",
         "BackboneConfig.precision": "--precision"}


def run_command(prog: str, function, args, *, debug: bool, flags: dict[str, str] | None = None) -> int:
    """Run a command; any error becomes one line on stderr and an exit code (2 bad input, 1 failure, 130
    interrupted, 143 terminated by SIGTERM). ``--debug`` shows the traceback instead."""
    from promptgen.errors import INTERRUPTED, TERMINATED, Terminated, describe

    try:
        return function(args)
    except BrokenPipeError:  # the reader of our output went away (`promptgen plugins | head`): nothing is wrong
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        return 0
    except (Exception, KeyboardInterrupt, Terminated) as error:
        if debug:
            raise
        message, code = describe(error)
        for field, flag in (flags or {}).items():
            message = message.replace(field, flag)
        print(f"{prog}: {'error: ' if code not in (INTERRUPTED, TERMINATED) else ''}{message}", file=sys.stderr)
        return code


@contextlib.contextmanager
def sigterm_raises():
    """While a command runs, SIGTERM (``kill PID``, a job scheduler's stop) ends it as Ctrl-C does: it raises
    :class:`~promptgen.errors.Terminated` in the main thread, so a run's partial directory is removed, finished
    runs and records stay, and run_command prints one line and exits 143. A second SIGTERM kills at once, and the
    worker processes this one started (a process pool) get it too, as a terminal's Ctrl-C reaches them all."""
    import signal
    import threading

    from promptgen.errors import Terminated

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    owner = os.getpid()

    def terminate(number, frame):
        signal.signal(number, signal.SIG_DFL)  # the next one kills, cleanup or not
        if os.getpid() != owner:  # a forked child that inherited the handler: end as SIGTERM says
            os.kill(os.getpid(), number)
            return
        if "multiprocessing" in sys.modules:
            for child in sys.modules["multiprocessing"].active_children():
                child.terminate()
        raise Terminated(number)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def warn_about_plugins() -> None:
    """Say once which plugins were left out, so that a broken one is visible without stopping the command."""
    from promptgen.components.registry import default_registry

    for error in default_registry().errors:
        print(f"promptgen: warning: {error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.command_line = argv  # what the user typed after `promptgen`, for commands that record it
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    setup_logging(quiet=getattr(args, "quiet", False), verbose=getattr(args, "verbose", False))
    if args.run is not cmd_plugins:  # `promptgen plugins` lists the errors itself
        warn_about_plugins()
    with sigterm_raises():
        return run_command("promptgen", args.run, args, debug=debug, flags=FLAGS)


if __name__ == "__main__":
    sys.exit(main())
