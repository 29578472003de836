"""python -m benchmarks.run: the project's main job. Runs a benchmark suite and prints its table.

A suite is a TOML file in benchmarks/suites/ (or any path): `--list` shows them. An accuracy suite
expands its DG protocol into jobs (one JSON record each, under --out); finished jobs are skipped on a
rerun (resume) unless --force, a failed job records its error and the sweep goes on. The table
(markdown + CSV + PNG) is derived from the records. The perf suite measures speed-ups side by side.
See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import attrs

from benchmarks import compare, dry_run, method_costs, perf, protocols, report, scale, selection, stability, suites, sweep
from benchmarks.records import RecordStore, partial_line, run_jobs, warn_about_strangers
from benchmarks.search import MAX_TRIALS, SELECTION_METHODS, Search, check_selection, check_trials
from benchmarks.tables import average_over_datasets
from promptgen.runs import defaults
from promptgen.runs.settings import merge_overrides, parse_settings
from promptgen.cli.common import (Parser, add_log_argument, add_set_argument, run_command, setup_logging,
                                  sigterm_raises, warn_about_plugins)
from promptgen.runs.curves import require_tensorboard
from promptgen.errors import FAILURE, PARTIAL, ConfigError, PromptgenError, suggestion
from promptgen.files import write_json, write_text
from promptgen.paths import check_outside_cache
from promptgen.components.presets import PRESET_CHOICES
from promptgen.components.registry import default_registry
from promptgen.components.resolve import Settings, build_launcher
from promptgen.machine import usable_cores

log = logging.getLogger(__name__)



def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m benchmarks.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", default="default",
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


def list_suites() -> None:
    for name in suites.available():
        try:
            summary = suites.load(name).description
        except PromptgenError as error:
            summary = f"(invalid: {error})"
        print(f"{name:<22} {summary}")


def resolve_suite(args) -> suites.Suite:
    """The suite file with the command line's changes to its keys and to its run template."""
    from promptgen.runs.config import SEED_LIMIT

    for seed in args.seeds or ():
        if not 0 <= seed <= SEED_LIMIT:
            raise ConfigError(f"--seeds: every seed must be an integer from 0 to {SEED_LIMIT}, got {seed}")
    for flag, values in (("--targets", args.targets), ("--methods", args.methods), ("--seeds", args.seeds)):
        twice = suites.listed_twice(values or ())
        if twice is not None:  # the same job twice, or two sweeps' worth of one
            raise ConfigError(f"{flag}: {twice!r} is listed twice; list each once")
    suite = suites.load(args.suite)
    backbone = {**suite.template.get("backbone", {}),
                **{k: v for k, v in (("name", args.backbone), ("model", args.model), ("pretrained", args.pretrained),
                                     ("device", args.device)) if v is not None}}
    template = {key: value for key, value in (("dataset", args.dataset), ("target_dataset", args.target_dataset),
                                              ("preset", args.preset), ("data_root", args.data_root))
                if value is not None}
    if backbone:
        template["backbone"] = backbone
    if args.set:
        template["overrides"] = merge_overrides(suite.template.get("overrides", {}), parse_settings(args.set))
    if args.dataset and (suite.datasets or (suite.dataset,)) != (args.dataset,):  # not the suite's own run
        suite = suites.with_changes(suite, only_dataset=args.dataset)
    if args.dataset or args.target_dataset:
        suite = suites.with_changes(suite, datasets=())  # the command line names the one dataset to run
    # The suite's launcher and workers unless the command line names them (every later step reads args).
    args.launcher = args.launcher or suite.launcher or defaults.LAUNCHER
    args.workers = args.workers or suite.workers or 2
    suite = suites.with_changes(suite, template=template, protocol=args.protocol,
                                methods=args.methods and tuple(args.methods), seeds=args.seeds and tuple(args.seeds),
                                targets=args.targets and tuple(args.targets))
    if args.trials is not None:
        check_trials(args.trials, "--trials")
        if suite.datasets:
            raise ConfigError(f"--trials: suite {suite.name} runs several datasets; a search runs one (--dataset)")
        suite = suites.with_changes(suite, search=attrs.evolve(suite.search or Search(), trials=args.trials))
    if args.selection is not None:
        if suite.search is None:
            raise ConfigError(f"--selection: suite {suite.name} is not a search (no hparams), so there is nothing to "
                              f"select among; add --trials N to make it a search of N trials per job")
        chosen = check_selection(args.selection, "--selection")
        suite = suites.with_changes(suite, search=attrs.evolve(suite.search, selection=chosen,
                                                               explicit_selection=True))
    if (suite.protocol == "cross-dataset") != (suite.target_dataset is not None):
        raise ConfigError(f"{suite.path}: protocol {suite.protocol} with target dataset {suite.target_dataset}: "
                          f"a target dataset goes with, and only with, --protocol cross-dataset")
    return suite


def check_data_root(suite: suites.Suite) -> None:
    """Real datasets: stop early, saying how to prepare the data, when it is not where the suite looks."""
    if suite.data_root is None:
        return
    root = Path(suite.data_root).expanduser()
    if not root.is_dir():
        steps = f"\n{suite.prepare}" if suite.prepare else ""
        raise ConfigError(f"suite {suite.name}: no data at {root} (from {suite.path} data_root, or --data-root)."
                          f"{steps}\nSee docs/benchmarks.md#real-datasets.")


def shard_spec(spec: str | None) -> str | None:
    """This process's shard, "I/N": --shard, else torchrun's RANK/WORLD_SIZE, else None (every job)."""
    if spec is None and "WORLD_SIZE" in os.environ:  # launched by torchrun: one shard per rank
        spec = f"{os.environ.get('RANK', '0')}/{os.environ['WORLD_SIZE']}"
    return spec


def shard(jobs: list, spec: str | None) -> list:
    spec = shard_spec(spec)
    if spec is None:
        return jobs
    try:
        index, count = (int(part) for part in spec.split("/"))
        assert 0 <= index < count
    except (ValueError, AssertionError):
        raise ConfigError(f"--shard must be I/N with 0 <= I < N, got {spec!r}") from None
    return jobs[index::count]


def rank_device(suite: suites.Suite) -> str | None:
    """Under torchrun, each rank computes on its own GPU (cuda:LOCAL_RANK) unless the suite pins a device."""
    if "LOCAL_RANK" not in os.environ or suite.example().backbone.device not in ("auto", "cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"  # more ranks than GPUs: they share


def launcher(args, registry, suite: suites.Suite | None = None):
    """The launcher plugin: the suite's settings of its name, then the command-line options it declares
    (workers, address, threads per worker) and progress (promptgen.components.resolve.build_launcher)."""
    settings = Settings("cpu", overrides=suite.example().overrides) if suite is not None else None
    return build_launcher(registry, args.launcher, {"workers": args.workers, "address": args.ray_address,
                                                    "threads_per_worker": args.threads}, settings,
                          progress=not args.quiet)


def run_accuracy(args, suite: suites.Suite, out: Path) -> tuple[str, dict]:
    registry = default_registry()
    check_data_root(suite)
    if suite.data_root:
        suite = suites.with_changes(suite, template={"data_root": str(Path(suite.data_root).expanduser())})
    skipped, notes = [], []
    jobs = protocols.expand(suite, registry, skipped=skipped, notes=notes)
    mine = shard(jobs, args.shard)  # checked before anything is written
    if args.compare:  # aliases (spg) read as the jobs name them; a method the suite never runs is refused at once
        args.compare = [registry.canonical("method", name) if registry.has("method", name) else name
                        for name in args.compare]
        compare.check_methods(args.compare, list(dict.fromkeys(job.method for job in jobs)),
                              f"is not a method of suite {suite.name}; its methods")
    for method, reason in dict.fromkeys(skipped):  # a multi-dataset suite skips a method once per dataset
        print(f"methods = all: skipping {method}: {reason}", flush=True)
    for note in dict.fromkeys(notes):
        print(f"hparams: {note}", flush=True)
    # the launcher, built (cheap: none starts anything before it runs) so that a misspelt --launcher or a bad
    # launcher setting is refused before --out is made
    jobs_launcher = None if args.report else launcher(args, registry, suite)
    if args.dry_run:
        workers = getattr(jobs_launcher, "workers", 1)  # jobs at once, where a launcher says (Launcher protocol)
        return dry_run.text(suite, jobs, mine, out, registry, workers), {"suite": suite.name, "jobs": len(jobs),
                                                                     "dry_run": True}
    make_out(out)
    store = RecordStore(out, suite=suite.name)
    if not args.report:
        args.hold(sweep_lock(out, shard_spec(args.shard)))  # until the sweep's outputs are written (run_suite)
        pending = [job for job in mine if args.force or not store.done(job)]
        print(f"suite {suite.label}: {len(jobs)} jobs, {len(mine) - len(pending)} already done, "
              f"running {len(pending)} with the {args.launcher} launcher", flush=True)
        # Within-job progress bars only when jobs run one at a time in this process.
        if args.log == "tensorboard":
            require_tensorboard()  # before the sweep, not after its first job
        runner = sweep.JobRunner(out, args.cache_dir, progress=not args.quiet and args.launcher == defaults.LAUNCHER,
                                 device=rank_device(suite), log=args.log)
        run_jobs(pending, runner, store, force=True, launcher=jobs_launcher)
    records = store.records(jobs)
    if args.report and not records and store.records():
        raise ConfigError(f"--report: none of the {len(store.records())} records under {store.directory} is a job of "
                          f"suite '{suite.name}' (another suite's, or other settings'); nothing was rewritten: give "
                          f"the suite and settings that wrote them")
    finished = list(dict.fromkeys(r["job"]["method"] for r in records if r.get("status") == "ok"))
    if args.compare and args.report:  # before anything is rewritten
        compare.check_methods(args.compare, finished, f"has no finished record of suite {suite.name} under "
                                                      f"{store.directory}; methods that have one")
    warn_about_strangers(store, jobs, suite.name)
    fingerprints = sorted({r["fingerprint"] for r in records if r.get("status") == "ok"})
    backbone = ", ".join(fingerprints) or "-"
    text = selection.write_tables(suite, jobs, records, backbone, out) if suite.search else \
        accuracy_tables(suite, jobs, records, backbone, out)
    pairs, pairs_text = compare.write(suite, jobs, records, out)
    if pairs_text:
        text += "\n\n" + pairs_text
    # a search's per-method summaries read its preset runs (trial 0), one run per cell as a sweep's
    preset_runs = [r for r in records if r["job"].get("trial") in (None, 0) and not r["job"].get("loo_for")]
    methods = sweep.method_table(jobs, preset_runs)
    write_text(out / "methods.md", methods + "\n")
    sweep.plot_seed_spread(preset_runs, out / "stability.png", f"{suite.label}: one dot per seed")
    text += ("\n\nPer method: seed stability, stage II time, how many runs kept their loop's last epoch, how far the "
             "generated prompts lie from their labels (× a label entry's RMS size), and generator quality; the last six columns are mean ± std over the method's jobs, every target and seed "
             "(docs/benchmarks.md)" + ("; a search's: over its trial 0 (the preset)" if suite.search else "")
             + "\n\n" + methods)
    off = sweep.off_their_labels(jobs, preset_runs)
    if off:
        text += ("\n\nGenerators that did not reach their labels: " + ", ".join(off) + ": their generated prompts lie "
                 "farther from the nearest stage I label than a label entry's own size (source val, mean over the "
                 "runs), so these rows show an untrained generator rather than what the method can do; `promptgen "
                 "inspect RUN_DIR` says where the accuracy goes (docs/spg-study.md)")
    short = sweep.under_trained(jobs, preset_runs)
    if short:
        text += ("\n\nUnder-trained by this schedule: " + ", ".join(short) + " kept the last epoch of their loop "
                 "(source val still at its best when it ended); a longer schedule may change their rows, so these "
                 "rows do not say how the method does")
    if suite.stability and preset_runs:
        rows = stability.study(preset_runs, registry, progress=not args.quiet)
        write_json(out / "records" / "stability.json", {"draws": stability.DRAWS, "rows": rows})
        write_text(out / "stability.csv", stability.csv(rows))
        write_text(out / "stability.md", stability.table(rows) + "\n")
        text += ("\n\nStability of the generated prompts: across seeds and across noise draws of one model "
                 "(docs/generators.md)\n\n" + stability.table(rows))
    if records and args.domain_gap:
        domains, gaps = sweep.domain_gaps(suite, args.cache_dir, rank_device(suite), registry,
                                          progress=not args.quiet)
        gap_table = sweep.domain_gap_table(gaps, domains)
        write_text(out / "domain_gap.md", gap_table + "\n")
        write_json(out / "domain_gap.json", gaps)
        text += "\n\nDomain gap in image-feature space: FID above the diagonal, KID ×10³ below\n\n" + gap_table
    failed = [r for r in records if r.get("status") == "failed"]
    missing = len(jobs) - len(records)
    # What this command answers for: a shard's sweep its own jobs (the other shards' come later), --report all.
    lacking = store.lacking(jobs if args.report else mine, records)
    if failed:
        text += "\n\nFailed jobs (see their records):\n" + "\n".join(
            f"- {r['job']['id']}: {r['error']}" for r in failed)
    if missing:
        text += f"\n\n{missing} of {len(jobs)} jobs have no record yet (another shard, or not run)."
    summary = {"suite": suite.name, "jobs": len(jobs), "ok": len(records) - len(failed), "failed": len(failed),
               "missing": missing}
    if args.compare:  # printed instead of the table (run_suite), not kept in summary.json
        summary["answer"] = compare_answer(args.compare, pairs, finished, suite, jobs)
    if lacking:  # the line run_suite prints, and exits PARTIAL
        summary["partial"] = partial_line(lacking, len(jobs if args.report else mine), store.directory)
    return text, summary


def compare_answer(names: list[str], pairs: list, finished: list[str], suite: suites.Suite, jobs: list) -> str:
    """--compare's answer; after a sweep whose jobs of a method all failed, a line saying so (the exit code is 1)."""
    lacking = [name for name in names if name not in finished]
    if lacking:
        return f"--compare: {lacking[0]} has no finished record: nothing to compare (see the failed jobs)"
    chosen = compare.selected_by(suite, jobs)
    heading = f"suite {suite.label}" + (f" (a search: the trials selected by {chosen})" if chosen else "")
    return compare.answer(pairs, *names, heading)


def accuracy_tables(suite: suites.Suite, jobs: list, records: list, backbone: str, out: Path) -> str:
    """The DomainBed-style table (markdown, table.csv, table.png); a multi-dataset suite's table per dataset
    (table.<dataset>.csv/png) after the one averaged over datasets (table.csv/png)."""
    plot_title = f"{suite.label}: test accuracy (%), {sweep.seeds_text(suite.seeds)}, 95% intervals"
    if not suite.datasets:
        table = sweep.suite_table(suite, jobs, records)
        write_text(out / "table.csv", table.csv())
        if table.cells:
            sweep.plot(table, out / "table.png", plot_title)
        return table.markdown(sweep.title(suite, suite.seeds, backbone))
    texts, rows = [], {}
    for part in suite.parts():
        mine = [job for job in jobs if job.dataset == part.dataset]
        if not mine:  # --targets left this dataset out
            continue
        ok = [record for record in records if record["job"]["dataset"] == part.dataset]
        table = sweep.suite_table(part, mine, ok)
        rows[part.dataset] = sweep.table_rows(ok)
        write_text(out / f"table.{part.dataset}.csv", table.csv())
        if table.cells:
            sweep.plot(table, out / f"table.{part.dataset}.png",
                       f"{suite.label}, {part.dataset}: test accuracy (%), {sweep.seeds_text(suite.seeds)}, "
                       f"95% intervals")
        texts.append(table.markdown(sweep.title(part, suite.seeds, backbone)))
    average = average_over_datasets(rows, list(dict.fromkeys(job.method for job in jobs)))
    write_text(out / "table.csv", average.csv())
    if average.cells:
        sweep.plot(average, out / "table.png", f"{suite.label}: average test accuracy (%) per dataset")
    heading = (f"Average test accuracy (%) over each dataset's held-out domains (column = dataset); "
               f"{sweep.seeds_text(suite.seeds)}; backbone {backbone}; best in bold")
    return "\n\n".join([average.markdown(heading), *texts])


LOCK = ".lock"


@contextlib.contextmanager
def sweep_lock(out: Path, shard: str | None = None):
    """Hold ``<out>/.lock`` while a sweep runs jobs and writes into ``out``: a second sweep on the same --out is
    refused, naming the first one's pid. An advisory flock, which the kernel releases when the process ends,
    however it ends: a killed sweep blocks nobody. The shards of one sweep (``--shard I/N``, torchrun's ranks)
    run side by side: each holds its own ``.lock.shard-I-of-N``. --report and --dry-run take none."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not a POSIX system: no lock
        yield
        return
    name = LOCK if shard is None else f"{LOCK}.shard-{shard.replace('/', '-of-')}"
    with open(out / name, "a+", encoding="utf-8") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            which = f" as shard {shard}" if shard else ""
            raise ConfigError(f"another sweep is running on {out}{which} (pid {holder}); wait for it to finish or "
                              f"choose another --out") from None
        file.truncate(0)
        file.write(f"{os.getpid()}\n")
        file.flush()
        yield


def make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"--out {out}: it, or a parent of it, is a file, not a directory") from None


def run_perf(args, suite: suites.Suite, out: Path) -> tuple[str, dict]:
    backbone = suite.example().backbone
    settings = {**suite.perf, "backbone": suite.template.get("backbone", {}), "cache_dir": args.cache_dir}
    measurements = settings.pop("measurements", list(perf.MEASUREMENTS))
    unknown = set(measurements) - set(perf.MEASUREMENTS)
    if unknown:
        raise ConfigError(f"{suite.path}: perf.measurements: unknown {sorted(unknown)}; "
                          f"measurements: {', '.join(perf.MEASUREMENTS)}"
                          f"{suggestion(sorted(unknown)[0], perf.MEASUREMENTS)}")
    methods = settings.pop("methods", None)  # the per-method costs (benchmarks.method_costs), when listed
    rows = perf.measure(settings, measurements, progress=not args.quiet)
    make_out(out / "records")
    write_json(out / "records" / "perf.json", {"settings": settings, "rows": rows})
    lines = ["measurement,baseline,fast,unit,baseline_rate,fast_rate,ratio,baseline_rss_mb,fast_rss_mb,max_logit_diff,"
             "floor_rate,fast_over_floor,same_predictions,baseline_cuda_mb,fast_cuda_mb"]
    lines += [",".join(str(r.get(key, "")) for key in lines[0].split(",")) for r in rows]
    write_text(out / "table.csv", "\n".join(lines) + "\n")
    model = f"{backbone.name}{' ' + backbone.model if backbone.model else ''}"
    text = perf.table(rows, f"{suite.name}: speed-ups measured side by side, backbone {model}; peak RSS of each "
                            f"arm's own process (torch, backbone and dataset included)") if rows else ""
    if methods is not None:
        costs = method_costs.measure({**perf.DEFAULTS, **settings, "methods": methods}, progress=not args.quiet)
        write_json(out / "records" / "methods.json", {"settings": settings, "rows": costs})
        write_text(out / "methods.csv", method_costs.csv(costs))
        text += ("\n\n" if text else "") + method_costs.table(
            costs, f"{suite.name}: what each method costs, backbone {model}, every stage cut to one epoch; "
                   f"peak memory above what the process held before the phase")
    return text, {"suite": suite.name, "rows": len(rows)}


def check_out_is_this_suites(out: Path, suite: suites.Suite) -> None:
    """Refuse an --out that holds another suite's results: its tables would be overwritten by this one's."""
    from promptgen.files import read_json_or_none

    summary = read_json_or_none(out / "summary.json")
    held = summary.get("suite") if isinstance(summary, dict) else None
    if held is not None and held != suite.name:
        raise ConfigError(f"--out {out} holds the results of suite '{held}' (its summary.json); running or reporting "
                          f"suite '{suite.name}' there would overwrite its tables: pass --suite {held}, or choose "
                          f"another --out")


def clamp_threads(threads: int) -> int:
    """--threads, at most the cores this process may use: threads beyond them only wait for each other (and a
    process pool multiplies them per worker). Says so on stderr when it clamps."""
    if threads < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {threads}")
    cores = usable_cores()
    if threads > cores:
        print(f"benchmarks.run: note: --threads {threads} clamped to {cores}, the cores this process may use: more "
              f"threads than cores only compete for them", file=sys.stderr, flush=True)
    return min(threads, cores)


def run_suite(args) -> int:
    """Run the suite the arguments name, write its outputs, print its table."""
    start = time.perf_counter()
    if args.threads is not None:
        args.threads = clamp_threads(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    suite = resolve_suite(args)
    out = args.out or suite.default_out
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    if not args.dry_run:
        check_outside_cache(out, args.cache_dir)
        check_out_is_this_suites(out, suite)
    if args.compare and suite.kind != "accuracy":
        raise ConfigError(f"--compare reads an accuracy suite's records; suite {suite.name} is a {suite.kind} suite")
    if args.compare and args.dry_run:
        raise ConfigError("--compare reads records and a dry run writes none: drop --dry-run (with --report, "
                          "--compare answers from the records already written)")
    if args.dry_run and suite.kind == "perf":
        print(f"dry run: perf suite {suite.name}: settings {json.dumps(suite.perf)}; backbone "
              f"{json.dumps(suite.template.get('backbone', {}))}; outputs under {out}")
        return 0
    with contextlib.ExitStack() as held:  # what the sweep holds until its outputs are written: its lock on --out
        args.hold = held.enter_context
        text, summary = {"perf": run_perf, "scale": scale.run}.get(suite.kind, run_accuracy)(args, suite, out)
        if summary.get("dry_run"):
            print(text)
            return 0
        seconds = time.perf_counter() - start
        answer = summary.pop("answer", None)  # --compare's: printed instead of the table
        write_text(out / "table.md", text + "\n")
        title = {"title": suite.label} if suite.label != suite.name else {}  # the page's, under --dataset
        write_json(out / "summary.json", {**summary, **title, "seconds": round(seconds, 1)})
        report.write_report(out)
    print("\n" + (answer or text))
    written = ", ".join(name for name in ("table.png", "pairs.csv") if (out / name).exists())
    print(f"\nwrote {out}/table.md, table.csv{', ' + written if written else ''}, index.html and records/ "
          f"({seconds:.0f} s)")
    if summary.get("partial"):
        print(f"benchmarks.run: {summary['partial']}", file=sys.stderr, flush=True)  # as its errors are
    return FAILURE if summary.get("failed") else PARTIAL if summary.get("partial") else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    if args.list:
        list_suites()
        return 0
    setup_logging(quiet=args.quiet, verbose=args.verbose)
    warn_about_plugins()
    with sigterm_raises():
        return run_command("benchmarks.run", run_suite, args, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
