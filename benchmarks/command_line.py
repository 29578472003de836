"""benchmarks.run's command line: its flags, and the request they make (an immutable value every later step reads).

The parser is the only place a flag is declared; :class:`Request` is what the orchestration
(benchmarks.orchestration) receives, so nothing after parsing changes what the user asked for:
values the suite supplies (its launcher and workers) and the clamped --threads are new copies of the
request (``attrs.evolve``), never edits to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import attrs

from benchmarks import suites
from benchmarks.records import PARTIAL
from benchmarks.search import MAX_TRIALS, SELECTION_METHODS
from promptgen.cli.common import Parser, add_log_argument, add_set_argument
from promptgen.components.presets import PRESET_CHOICES
from promptgen.runs import defaults

DESCRIPTION = """python -m benchmarks.run: the project's main job. Runs a benchmark suite and prints its table.

A suite is a TOML file in benchmarks/suites/ (or any path): `--list` shows them. An accuracy suite
expands its DG protocol into jobs (one JSON record each, under --out); finished jobs are skipped on a
rerun (resume) unless --force, a failed job records its error and the sweep goes on. The table
(markdown + CSV + PNG) is derived from the records. The perf suite measures speed-ups side by side.
See docs/benchmarks.md.
"""

DEFAULT_SUITE = "default"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m benchmarks.run", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", default=DEFAULT_SUITE,
                        help="a suite name (see --list) or a .toml file (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the suites, one line each, and exit")
    what = parser.add_argument_group("override the suite")
    what.add_argument("--methods", nargs="+", metavar="METHOD", help="registered methods (promptgen plugins), or all")
    what.add_argument("--seeds", nargs="+", type=int, metavar="SEED")
    what.add_argument("--targets", nargs="+", metavar="DOMAIN", help="only these target domains")
    what.add_argument("--protocol", choices=suites.PROTOCOLS, help="the DG protocol")
    what.add_argument("--dataset", help="the (source) dataset plugin to run instead of the suite's: on a suite of "
                      "several (the default: digits-dg and digits-traps) it narrows the suite to that one, its jobs "
                      "and its table alone; a dataset the suite does not list runs with the suite's methods and "
                      "settings. The default --out and the report's title name it: results/default-digits-traps, "
                      "'default (digits-traps)'")
    what.add_argument("--target-dataset", help="cross-dataset: the dataset tested on")
    what.add_argument("--backbone", help="backbone plugin, e.g. openclip")
    what.add_argument("--model", help="open_clip model name, e.g. ViT-B-16")
    what.add_argument("--pretrained", help="pretrained tag or local checkpoint file")
    what.add_argument("--device", help="cpu, cuda, cuda:N, auto")
    what.add_argument("--preset", choices=PRESET_CHOICES)
    what.add_argument("--data-root", help="where the dataset lives (real datasets)")
    what.add_argument("--trials", type=int, metavar="N", help="a random search of N trials per job over the options' "
                      f"declared spaces (trial 0: the preset's values; N at most {MAX_TRIALS:,}); the suite's hparams "
                      "otherwise")
    what.add_argument("--selection", nargs="+", choices=SELECTION_METHODS, metavar="METHOD",
                      help="a search's model selection methods, in this order (the first one's table is table.csv): "
                      f"{', '.join(SELECTION_METHODS)}; instead of the suite's hparams.selection (default: all three). "
                      "leave-one-domain-out adds runs (each trial trained once more without each source domain), the "
                      "others none: leaving it out skips them. Needs a search: --trials N, or a suite with hparams")
    add_set_argument(what)
    where = parser.add_argument_group("where and how")
    where.add_argument("--out", type=Path, help="output directory (default: results/SUITE, results/SUITE-DATASET "
                       "with a --dataset the suite file does not run alone)")
    where.add_argument("--cache-dir",
                       help="feature cache root (default: $PROMPTGEN_CACHE_DIR, else ~/.cache/promptgen)")
    where.add_argument("--force", action="store_true", help="rerun jobs that already have a finished record")
    where.add_argument("--launcher", help=f"launcher plugin, e.g. local, processes or ray (default: the suite's "
                                          f"launcher, else {defaults.LAUNCHER})")
    where.add_argument("--workers", type=int,
                       help="processes launcher: worker processes (default: the suite's, else 2)")
    where.add_argument("--threads", type=int, metavar="N", help="torch threads of each job: per worker with the "
                       "processes launcher (default: its share of the usable cores), else of this process (default: "
                       "torch's, one per core); at most the usable cores (more is clamped, with a note); on a "
                       "machine busy with other work, 1")
    where.add_argument("--ray-address", help="ray launcher: a running cluster (ray://host:10001 or auto); "
                       "default: start a local Ray instance")
    where.add_argument("--shard", help="I/N: run every N-th job from the I-th (0-based); default from torchrun's "
                       "RANK and WORLD_SIZE when set")
    where.add_argument("--report", action="store_true", help="only rebuild the table from the records already "
                       f"written; exit code {PARTIAL} if a job of the suite has no usable record (missing or damaged: "
                       "its cells are left out; one line names the first), 1 if one failed, 0 when complete")
    where.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print one pair of methods instead of the "
                       "table: per dataset and column, A's and B's means, A − B in points with its 95%% paired "
                       "interval over the same test images, the paired test's p and its Holm-adjusted p (over that "
                       "column's pairs); from the suite's records, with --report or after the sweep; every output "
                       "(table.md, pairs.csv: every pair) is written as always (docs/benchmarks.md)")
    where.add_argument("--dry-run", action="store_true", help="print the jobs and the first job resolved (sample "
                       "counts, options, estimated cost); run and write nothing")
    where.add_argument("--domain-gap", action="store_true", help="also the domain-gap table: FID/KID between the "
                       "image features of every pair of domains (up to 500 test images per domain)")
    add_log_argument(where)
    where.add_argument("--quiet", action="store_true", help="no progress bars; errors only")
    where.add_argument("-v", "--verbose", action="store_true", help="also log progress notes (INFO)")
    where.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return parser


def _tuple(values: Sequence | None) -> tuple | None:
    """A repeatable flag's values as a tuple (hashable, unchangeable); None stays 'not given'."""
    return None if values is None else tuple(values)


@attrs.frozen
class Request:
    """What one ``python -m benchmarks.run`` asks for: its flags, parsed, as values (None: not given).

    The names are the flags' (``--target-dataset`` is ``target_dataset``). --list, --verbose and --debug are not
    here: the entry point (benchmarks.run.main) acts on them before a request is made."""

    suite: str = DEFAULT_SUITE
    # override the suite
    methods: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple)
    seeds: tuple[int, ...] | None = attrs.field(default=None, converter=_tuple)
    targets: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple)
    protocol: str | None = None
    dataset: str | None = None
    target_dataset: str | None = None
    backbone: str | None = None
    model: str | None = None
    pretrained: str | None = None
    device: str | None = None
    preset: str | None = None
    data_root: str | None = None
    trials: int | None = None
    selection: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple)
    set: tuple[str, ...] | None = attrs.field(default=None, converter=_tuple)
    # where and how
    out: Path | None = None
    cache_dir: str | None = None
    force: bool = False
    launcher: str | None = None
    workers: int | None = None
    threads: int | None = None
    ray_address: str | None = None
    shard: str | None = None
    report: bool = False
    compare: tuple[str, str] | None = attrs.field(default=None, converter=_tuple)
    dry_run: bool = False
    domain_gap: bool = False
    log: str | None = None
    quiet: bool = False

    @classmethod
    def from_flags(cls, flags: argparse.Namespace) -> Request:
        return cls(**{field.name: getattr(flags, field.name) for field in attrs.fields(cls)})


def parse(argv: Sequence[str]) -> Request:
    """The request ``argv`` makes; a bad flag exits 2 with one line, as the command does."""
    return Request.from_flags(build_parser().parse_args(list(argv)))
