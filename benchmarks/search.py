"""A random hyperparameter search over the declared options, DomainBed style: a suite's ``hparams`` table.

    hparams = { trials = 3, seed = 0, selection = ["training-domain", "leave-one-domain-out", "oracle"] }

Each (split, method, seed) of the suite runs ``trials`` times: trial 0 with the preset's values (the suite's
overrides included), trial t with the values promptgen.components.search.draw_trial draws from the search spaces
the method's components declare (on top of the suite's overrides), the same values for every split and seed of
one sweep seed (DomainBed's ``hparams_seed``). A method whose components declare no space runs trial 0 only.
Every trial is an ordinary job (its drawn values in its config and record): it resumes, shards and runs on every
launcher as any job does. Its runs record what model selection reads (RunConfig.checkpoints).

Leave-one-domain-out selection needs more runs: for each held-out domain t and each of its sources v, the same
trial trained without v as well and tested on v (DomainBed's runs with two test environments). They are jobs of
their own (``Job.loo_for = t``), and the method needs at least 3 source domains (2 left to train on).
benchmarks/selection.py applies the selection methods to the records.
"""

from __future__ import annotations

from typing import Sequence

import attrs

from benchmarks.records import Job
from promptgen.components.search import draw_trial
from promptgen.errors import ConfigError, suggestion

SELECTION_METHODS = ("training-domain", "leave-one-domain-out", "oracle")
LOO = "leave-one-domain-out"
LOO_MIN_SOURCES = 3  # one held out for validation leaves two to train on
# The most trials a search may ask for (--trials, a suite's hparams.trials): ten times DomainBed's 20 per algorithm.
# Every trial's jobs are made before the first line is printed, the dry run's included, so the bound keeps the
# command prompt. Measured on 2 cores, dry runs on digits-dg: every registered method (41,632 jobs) 8.6 s at 200
# trials against 4.5 s at 1 (start-up); 26 s at 1,000; a billion printed nothing in 130 s, filling memory.
MAX_TRIALS = 200


@attrs.frozen
class Search:
    trials: int = 1
    seed: int = 0  # the sweep seed the trials' values are drawn with (not a run seed)
    selection: tuple[str, ...] = SELECTION_METHODS
    explicit_selection: bool = False  # the suite or command line listed the selection methods


def parse(value, where: str) -> Search:
    """The suite's ``hparams`` table, checked; errors name ``where`` (file: hparams)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a table, e.g. {{ trials = 20, seed = 0 }}, got {value!r}")
    unknown = sorted(set(value) - {"trials", "seed", "selection"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; keys: trials, seed, selection")
    trials, seed = check_trials(value.get("trials", 1), f"{where}.trials"), value.get("seed", 0)
    if type(seed) is not int or seed < 0:
        raise ConfigError(f"{where}.seed: must be an integer >= 0, got {seed!r}")
    selection = value.get("selection")
    if selection is not None:
        selection = check_selection(selection, f"{where}.selection")
    return Search(trials, seed, selection or SELECTION_METHODS, explicit_selection=selection is not None)


def check_trials(trials, where: str) -> int:
    """``trials`` when it is an integer from 1 to MAX_TRIALS; else a ConfigError naming ``where``."""
    if type(trials) is not int or trials < 1:
        raise ConfigError(f"{where}: must be an integer >= 1, got {trials!r}")
    if trials > MAX_TRIALS:
        raise ConfigError(f"{where}: at most {MAX_TRIALS:,} trials per job (MAX_TRIALS, benchmarks/search.py), got "
                          f"{trials:,}")
    return trials


def check_selection(names, where: str) -> tuple[str, ...]:
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, (list, tuple)) or not names:
        raise ConfigError(f"{where}: must be a non-empty list of {', '.join(SELECTION_METHODS)}, got {names!r}")
    for name in names:
        if name not in SELECTION_METHODS:
            raise ConfigError(f"{where}: unknown selection method {name!r}; methods: {', '.join(SELECTION_METHODS)}"
                              f"{suggestion(str(name), SELECTION_METHODS)}")
    return tuple(dict.fromkeys(names))


def loo_refusal(sources: int, protocol: str) -> str | None:
    """Why leave-one-domain-out cannot select on a protocol whose runs train on ``sources`` domains, or None."""
    if sources < LOO_MIN_SOURCES:
        return (f"leave-one-domain-out selection needs at least {LOO_MIN_SOURCES} source domains per run (one held "
                f"out, two to train on); the {protocol} protocol's runs have {sources}")
    return None


def expand(search: Search, jobs: Sequence[Job], registry, components_of, notes: list | None = None) -> list[Job]:
    """The search's jobs from the suite's (trial-less) ``jobs``: every trial of each, then the leave-one-domain-out
    jobs of each trial. ``components_of(config)``: the (kind, name) pairs of a config's method and components."""
    searched, spaces, draws = [], {}, {}
    for trial in range(search.trials):
        for job in jobs:
            if job.method not in spaces:
                spaces[job.method] = tuple(components_of(job.config))
            if (job.method, trial) not in draws:  # a draw is the same for every split and seed: drawn once
                draws[job.method, trial] = draw_trial(registry, spaces[job.method], trial, search.seed)
            drawn = draws[job.method, trial]
            if trial and not drawn:
                continue  # nothing to search: trial 0 is the method's only trial
            overrides = {name: {**job.config.overrides.get(name, {}), **values} for name, values in drawn.items()}
            config = attrs.evolve(job.config, overrides={**job.config.overrides, **overrides}, checkpoints=True)
            searched.append(attrs.evolve(job, config=config, trial=trial, hparams=drawn))
    if LOO not in search.selection:
        return searched
    reason = loo_refusal(min(len(job.sources) for job in jobs), jobs[0].protocol) if jobs else None
    if reason:
        if search.explicit_selection:
            raise ConfigError(reason)
        if notes is not None:
            notes.append(f"{reason}: left out")
        return searched
    return searched + [loo for job in searched for loo in loo_jobs(job)]


def loo_jobs(job: Job) -> list[Job]:
    """The runs that validate ``job``'s trial by leave-one-domain-out: for each source v, trained on the other
    sources and tested on v (the source dataset's v: a cross-dataset job's as well)."""
    held_out = "+".join(job.targets)
    return [attrs.evolve(job, loo_for=held_out, config=attrs.evolve(
        job.config, sources=tuple(s for s in job.sources if s != source), targets=(source,), target_dataset=None))
        for source in job.sources]
