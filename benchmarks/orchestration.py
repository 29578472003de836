"""What a request (benchmarks.command_line.Request) sets going: the suite its flags make, this process's shard of
the jobs, the jobs through a launcher under a lock on --out, then the outputs (benchmarks.report_text).

Every check that can refuse the request runs before --out is made, so a refused command leaves nothing behind.
The values a request leaves to the suite (launcher, workers) and the clamped --threads travel as a new request
(``attrs.evolve``), so each step reads the request it is given and none changes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import attrs

from benchmarks import compare, dry_run, method_costs, perf, protocols, remote, report_text, scale, stability, suites, \
    sweep
from benchmarks.command_line import Request
from benchmarks.out_dir import check_out, make_out, sweep_lock
from benchmarks.records import RecordStore, partial_line, run_jobs, warn_about_strangers
from benchmarks.search import Search, check_selection, check_trials
from promptgen.components.registry import default_registry
from promptgen.components.resolve import Settings, build_launcher
from promptgen.errors import ConfigError, suggestion
from promptgen.files import write_json
from promptgen.machine import usable_cores
from promptgen.runs import defaults
from promptgen.runs.curves import require_tensorboard
from promptgen.runs.settings import merge_overrides, parse_settings


def suite_from_request(request: Request) -> suites.Suite:
    """The suite file with the command line's changes to its keys and to its run template."""
    from promptgen.runs.config import SEED_LIMIT

    for seed in request.seeds or ():
        if not 0 <= seed <= SEED_LIMIT:
            raise ConfigError(f"--seeds: every seed must be an integer from 0 to {SEED_LIMIT}, got {seed}")
    for flag, values in (("--targets", request.targets), ("--methods", request.methods), ("--seeds", request.seeds)):
        twice = suites.listed_twice(values or ())
        if twice is not None:  # the same job twice, or two sweeps' worth of one
            raise ConfigError(f"{flag}: {twice!r} is listed twice; list each once")
    suite = suites.load(request.suite)
    backbone = {**suite.template.get("backbone", {}),
                **{k: v for k, v in (("name", request.backbone), ("model", request.model),
                                     ("pretrained", request.pretrained), ("device", request.device)) if v is not None}}
    template = {key: value for key, value in (("dataset", request.dataset), ("target_dataset", request.target_dataset),
                                              ("preset", request.preset), ("data_root", request.data_root))
                if value is not None}
    if backbone:
        template["backbone"] = backbone
    if request.set:
        template["overrides"] = merge_overrides(suite.template.get("overrides", {}), parse_settings(request.set))
    if request.dataset and (suite.datasets or (suite.dataset,)) != (request.dataset,):  # not the suite's own run
        suite = suites.with_changes(suite, only_dataset=request.dataset)
    if request.dataset or request.target_dataset:
        suite = suites.with_changes(suite, datasets=())  # the command line names the one dataset to run
    suite = suites.with_changes(suite, template=template, protocol=request.protocol, methods=request.methods,
                                seeds=request.seeds, targets=request.targets)
    if request.trials is not None:
        check_trials(request.trials, "--trials")
        if suite.datasets:
            raise ConfigError(f"--trials: suite {suite.name} runs several datasets; a search runs one (--dataset)")
        suite = suites.with_changes(suite, search=attrs.evolve(suite.search or Search(), trials=request.trials))
    if request.selection is not None:
        if suite.search is None:
            raise ConfigError(f"--selection: suite {suite.name} is not a search (no hparams), so there is nothing to "
                              f"select among; add --trials N to make it a search of N trials per job")
        chosen = check_selection(request.selection, "--selection")
        suite = suites.with_changes(suite, search=attrs.evolve(suite.search, selection=chosen,
                                                               explicit_selection=True))
    if (suite.protocol == "cross-dataset") != (suite.target_dataset is not None):
        raise ConfigError(f"{suite.path}: protocol {suite.protocol} with target dataset {suite.target_dataset}: "
                          f"a target dataset goes with, and only with, --protocol cross-dataset")
    return suite


def with_suite_defaults(request: Request, suite: suites.Suite) -> Request:
    """The request with the suite's launcher and workers where the command line names none (then the defaults)."""
    return attrs.evolve(request, launcher=request.launcher or suite.launcher or defaults.LAUNCHER,
                        workers=request.workers or suite.workers or 2)


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


def launcher(request: Request, registry, suite: suites.Suite | None = None):
    """The launcher plugin: the suite's settings of its name, then the command-line options it declares
    (workers, address, threads per worker) and progress (promptgen.components.resolve.build_launcher)."""
    settings = Settings("cpu", overrides=suite.example().overrides) if suite is not None else None
    return build_launcher(registry, request.launcher, {"workers": request.workers, "address": request.ray_address,
                                                       "threads_per_worker": request.threads}, settings,
                          progress=not request.quiet)


def run_accuracy(request: Request, suite: suites.Suite, out: Path, hold) -> tuple[str, dict]:
    """Expand, shard and run an accuracy suite's jobs, then compose its text from the records. ``hold`` enters a
    context (the lock on --out) that stays held until the caller has written the outputs."""
    registry = default_registry()
    check_data_root(suite)
    if suite.data_root:
        suite = suites.with_changes(suite, template={"data_root": str(Path(suite.data_root).expanduser())})
    skipped, notes = [], []
    jobs = protocols.expand(suite, registry, skipped=skipped, notes=notes)
    mine = shard(jobs, request.shard)  # checked before anything is written
    compared = None
    if request.compare:  # aliases (spg) read as the jobs name them; a method the suite never runs is refused at once
        compared = [registry.canonical("method", name) if registry.has("method", name) else name
                    for name in request.compare]
        compare.check_methods(compared, list(dict.fromkeys(job.method for job in jobs)),
                              f"is not a method of suite {suite.name}; its methods")
    for method, reason in dict.fromkeys(skipped):  # a multi-dataset suite skips a method once per dataset
        print(f"methods = all: skipping {method}: {reason}", flush=True)
    for note in dict.fromkeys(notes):
        print(f"hparams: {note}", flush=True)
    # the launcher, built (cheap: none starts anything before it runs) so that a misspelt --launcher or a bad
    # launcher setting is refused before --out is made
    jobs_launcher = None if request.report else launcher(request, registry, suite)
    if request.dry_run:
        workers = getattr(jobs_launcher, "workers", 1)  # jobs at once, where a launcher says (Launcher protocol)
        return dry_run.text(suite, jobs, mine, out, registry, workers), {"suite": suite.name, "jobs": len(jobs),
                                                                     "dry_run": True}
    make_out(out)
    store = RecordStore(out, suite=suite.name)
    if not request.report:
        hold(sweep_lock(out, shard_spec(request.shard)))
        pending = [job for job in mine if request.force or not store.done(job)]
        print(f"suite {suite.label}: {len(jobs)} jobs, {len(mine) - len(pending)} already done, "
              f"running {len(pending)} with the {request.launcher} launcher", flush=True)
        if request.log == "tensorboard":
            require_tensorboard()  # before the sweep, not after its first job
        # Within-job progress bars only when jobs run one at a time in this process.
        runner = sweep.JobRunner(out, request.cache_dir, device=rank_device(suite), log=request.log,
                                 progress=not request.quiet and request.launcher == defaults.LAUNCHER)
        elsewhere = None
        if pending and not getattr(jobs_launcher, "shares_disk", True):  # features travel, run directories return
            pack, cost = remote.features_home(pending, jobs_launcher, request.cache_dir, progress=not request.quiet)
            write_json(out / "features.json", cost)
            elsewhere = remote.Elsewhere(out.absolute(), pack)
        run_jobs(pending, runner, store, force=True, launcher=jobs_launcher, elsewhere=elsewhere)
    records = store.records(jobs)
    if request.report and not records and store.records():
        raise ConfigError(f"--report: none of the {len(store.records())} records under {store.directory} is a job of "
                          f"suite '{suite.name}' (another suite's, or other settings'); nothing was rewritten: give "
                          f"the suite and settings that wrote them")
    finished = list(dict.fromkeys(r["job"]["method"] for r in records if r.get("status") == "ok"))
    if compared and request.report:  # before anything is rewritten
        compare.check_methods(compared, finished, f"has no finished record of suite {suite.name} under "
                                                  f"{store.directory}; methods that have one")
    warn_about_strangers(store, jobs, suite.name)
    text, pairs = report_text.accuracy_text(suite, jobs, records, out)
    runs = report_text.preset_runs(records)
    if suite.stability and runs:
        text += report_text.stability_text(stability.study(runs, registry, progress=not request.quiet), out)
    if records and request.domain_gap:
        domains, gaps = sweep.domain_gaps(suite, request.cache_dir, rank_device(suite), registry,
                                          progress=not request.quiet)
        text += report_text.domain_gap_text(domains, gaps, out)
    ending, summary = report_text.outcome(suite, jobs, records)
    text += ending
    if compared:  # printed instead of the table (run_suite), not kept in summary.json
        summary["answer"] = report_text.compare_answer(compared, pairs, finished, suite, jobs)
    # What this command answers for: a shard's sweep its own jobs (the other shards' come later), --report all.
    answered = jobs if request.report else mine
    lacking = store.lacking(answered, records)
    if lacking:  # the line run_suite prints; benchmarks.run exits PARTIAL
        summary["partial"] = partial_line(lacking, len(answered), store.directory)
    return text, summary


def run_perf(request: Request, suite: suites.Suite, out: Path) -> tuple[str, dict]:
    backbone = suite.example().backbone
    settings = {**suite.perf, "backbone": suite.template.get("backbone", {}), "cache_dir": request.cache_dir}
    measurements = settings.pop("measurements", list(perf.MEASUREMENTS))
    unknown = set(measurements) - set(perf.MEASUREMENTS)
    if unknown:
        raise ConfigError(f"{suite.path}: perf.measurements: unknown {sorted(unknown)}; "
                          f"measurements: {', '.join(perf.MEASUREMENTS)}"
                          f"{suggestion(sorted(unknown)[0], perf.MEASUREMENTS)}")
    methods = settings.pop("methods", None)  # the per-method costs (benchmarks.method_costs), when listed
    rows = perf.measure(settings, measurements, progress=not request.quiet)
    make_out(out / "records")
    write_json(out / "records" / "perf.json", {"settings": settings, "rows": rows})
    model = f"{backbone.name}{' ' + backbone.model if backbone.model else ''}"
    text = report_text.perf_text(suite, model, rows, out)
    if methods is not None:
        costs = method_costs.measure({**perf.DEFAULTS, **settings, "methods": methods}, progress=not request.quiet)
        write_json(out / "records" / "methods.json", {"settings": settings, "rows": costs})
        text += ("\n\n" if text else "") + report_text.method_costs_text(suite, model, costs, out)
    return text, {"suite": suite.name, "rows": len(rows)}


def run_suite(request: Request) -> dict:
    """Run the suite the request names, write its outputs, print its table; the summary says how it went
    ("failed", "partial"), empty after a dry run."""
    start = time.perf_counter()
    if request.threads is not None:
        request = attrs.evolve(request, threads=clamp_threads(request.threads))
        import torch

        torch.set_num_threads(request.threads)
    suite = suite_from_request(request)
    request = with_suite_defaults(request, suite)
    out = request.out or suite.default_out
    check_out(out, suite, request.cache_dir, writes=not request.dry_run)
    if request.compare and suite.kind != "accuracy":
        raise ConfigError(f"--compare reads an accuracy suite's records; suite {suite.name} is a {suite.kind} suite")
    if request.compare and request.dry_run:
        raise ConfigError("--compare reads records and a dry run writes none: drop --dry-run (with --report, "
                          "--compare answers from the records already written)")
    if request.dry_run and suite.kind == "perf":
        print(f"dry run: perf suite {suite.name}: settings {json.dumps(suite.perf)}; backbone "
              f"{json.dumps(suite.template.get('backbone', {}))}; outputs under {out}")
        return {}
    with contextlib.ExitStack() as held:  # what the sweep holds until its outputs are written: its lock on --out
        if suite.kind == "perf":
            text, summary = run_perf(request, suite, out)
        elif suite.kind == "scale":
            text, summary = scale.run(request, suite, out)
        else:
            text, summary = run_accuracy(request, suite, out, held.enter_context)
        if summary.get("dry_run"):
            print(text)
            return {}
        seconds = time.perf_counter() - start
        answer = summary.pop("answer", None)  # --compare's: printed instead of the table
        report_text.write(out, suite, text, summary, seconds)
    print("\n" + (answer or text))
    written = ", ".join(name for name in ("table.png", "pairs.csv") if (out / name).exists())
    print(f"\nwrote {out}/table.md, table.csv{', ' + written if written else ''}, index.html and records/ "
          f"({seconds:.0f} s)")
    if summary.get("partial"):
        print(f"benchmarks.run: {summary['partial']}", file=sys.stderr, flush=True)  # as its errors are
    return summary
