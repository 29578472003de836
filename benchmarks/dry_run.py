"""What ``python -m benchmarks.run --dry-run`` prints: the jobs a suite expands into, each with its time estimated
from the finished jobs under --out, what a search and each selection method add, and the first job resolved."""

from __future__ import annotations

from pathlib import Path

from benchmarks import sweep
from benchmarks.records import RecordStore, estimate
from benchmarks.search import LOO, LOO_MIN_SOURCES
from benchmarks.suites import Suite

LISTED_JOBS = 100  # a dry run lists every job of a suite up to this many, each with its estimated time


def text(suite: Suite, jobs: list, mine: list, out: Path, registry, workers: int = 1) -> str:
    """The jobs the suite expands into (each with its time estimated from the finished jobs under ``out``), how
    many are done, what the rest would cost, and the first job resolved (promptgen.runs.dry_run)."""
    from promptgen.runs import dry_run as resolved
    from promptgen.runs.engine import check, plan_run

    store = RecordStore(out) if out.is_dir() else None
    records = store.records() if store is not None else []
    pending = [job for job in mine if store is None or not store.done(job)]
    seconds, measured, unmeasured = estimate(pending, records)
    lines = [f"dry run: suite {suite.label}: {len(jobs)} jobs ({len(mine)} in this shard, {len(mine) - len(pending)} "
             f"already done), outputs under {out}"]

    def listed(job) -> str:
        if job.id not in seconds:
            return f"  {job.id}  (done)"
        return f"  {job.id}" + (f"  ~{seconds[job.id]:.0f} s" if seconds[job.id] is not None else "")

    lines += [listed(job) for job in mine[:LISTED_JOBS]]
    lines += [f"  ... and {len(mine) - LISTED_JOBS} more"] if len(mine) > LISTED_JOBS else []
    if suite.search is not None:
        lines += search_size(suite, jobs)
    if measured:
        total = sum(value for value in seconds.values() if value is not None)
        lines.append(f"estimated time of the {len(pending)} jobs to run: {total / 60:.1f} min of job time from the "
                     f"times of {measured} finished jobs in {out}"
                     + (f" (about {total / 60 / workers:.1f} min on {workers} workers)" if workers > 1 else "")
                     + (f"; not counted: {', '.join(unmeasured)} (no finished job measured)" if unmeasured else ""))
    elif pending:
        lines.append("estimated time: nothing measured yet (no finished job under --out); run a few jobs first "
                     "(--seeds 0 --targets ONE, or --trials 1 for a search) into the same --out, then this dry run "
                     "estimates each job from their times")
    if mine:
        config = mine[0].config
        checked = check(config, registry)
        summary = resolved.describe(config, registry, checked, plan_run(config, registry, checked, False),
                                    out / "runs" / mine[0].id)
        lines += ["", "the first job:", resolved.text(summary)]
    return "\n".join(lines)


def search_size(suite: Suite, jobs: list) -> list[str]:
    """A search's size: trials x jobs, its leave-one-domain-out runs, and what each selection method adds."""
    main = [job for job in jobs if not job.loo_for]
    first = sum(1 for job in main if job.trial == 0)
    count = sweep.counted
    return [f"search: {count(suite.search.trials, 'trial')} (seed {suite.search.seed}) of {count(first, 'job')}: "
            f"{count(len(main), 'run')} (a method with no search space runs trial 0 only) and "
            f"{count(len(jobs) - len(main), 'leave-one-domain-out run')}; selection: "
            f"{', '.join(suite.search.selection)}", selection_costs(suite.search.selection, jobs)]


def selection_costs(names: tuple[str, ...], jobs: list) -> str:
    """What each selection method adds to a search's runs; where leave-one-domain-out is not chosen, what it would."""
    main = [job for job in jobs if not job.loo_for]
    loo = len(jobs) - len(main)
    costs = {"training-domain": "0 extra runs (reads each run's own source val)",
             "oracle": "0 extra runs (reads the held-out val split)",
             LOO: f"+{loo} runs (each trial trained once more without each source, tested on it)" if loo else
                  f"left out, no runs (it needs {LOO_MIN_SOURCES} source domains: see the hparams note)"}
    line = "selection " + "; ".join(f"{name}: {costs[name]}" for name in names)
    possible = main and min(len(job.sources) for job in main) >= LOO_MIN_SOURCES
    if LOO not in names and possible:
        line += f" (leave-one-domain-out, not chosen, would add {sum(len(job.sources) for job in main)} runs)"
    return line
