"""The ``promptgen`` command line: its parser (every command and its flags, and those plugins add) and
:func:`main`, which runs the chosen command. The commands themselves are in promptgen.cli.components, .cache and
.train; what any promptgen command line shares is in promptgen.cli.common."""

from __future__ import annotations

import argparse
import sys

from promptgen import __version__
from promptgen.cli.cache import cmd_cache_clear, cmd_cache_extract, cmd_cache_info, cmd_cache_merge, cmd_cache_verify
from promptgen.cli.common import (Parser, add_backbone_arguments, add_log_argument, add_output_arguments,
                                  add_plugin_commands, add_set_argument, run_command, setup_logging, sigterm_raises,
                                  warn_about_plugins)
from promptgen.cli.components import cmd_backbone, cmd_plugins
from promptgen.cli.train import cmd_evaluate, cmd_inspect, cmd_train
from promptgen.components.presets import EPOCHS, PRESET_CHOICES
from promptgen.runs import defaults

DESCRIPTION = """\
promptgen: generative soft-prompt domain generalization (SPG and friends) on CLIP-style models.

Every component (backbone, prompt learner, generator, dataset, launcher, method) is a plugin
registered through the 'promptgen' entry-point group; the built-in ones register the same way.
The benchmark harness is a separate entry: python -m benchmarks.run
"""


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
    cache_extract.add_argument("--preset", default="auto", choices=PRESET_CHOICES,
                               help="the preset whose dataset options (e.g. the split) and views the runs will use: "
                                    "the samples extracted are those they train and test on (default: %(default)s)")
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
    inspect = commands.add_parser("inspect", help=cmd_inspect.__doc__, description=cmd_inspect.__doc__)
    inspect.add_argument("run_dir", help="a directory written by promptgen train (or a sweep's runs/...)")
    inspect.add_argument("--json", action="store_true", help="print the figures as JSON")
    inspect.add_argument("--draws", type=int, default=5, help="noise draws per image (default: %(default)s)")
    for command, run in ((train, cmd_train), (evaluate, cmd_evaluate), (inspect, cmd_inspect)):
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


# Fields of the configs as this command line spells them: run_command names the flag in a ConfigError about one
# (its ``field``), so that the message says what the user typed.
FLAGS = {"RunConfig.seed": "--seed", "RunConfig.views": "--views", "RunConfig.epoch": "--epoch",
         "RunConfig.targets": "--target",
         "RunConfig.sources": "--sources", "RunConfig.method": "--method", "RunConfig.preset": "--preset",
         "RunConfig.dataset": "--dataset", "RunConfig.target_dataset": "--target-dataset",
         "RunConfig.num_workers": "--workers", "RunConfig.overrides": "--set", "RunConfig.data_root": "--data-root",
         "RunConfig.cache_dir": "--cache-dir", "BackboneConfig.name": "--backbone", "BackboneConfig.model": "--model",
         "BackboneConfig.pretrained": "--pretrained", "BackboneConfig.device": "--device",
         "BackboneConfig.precision": "--precision"}


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
