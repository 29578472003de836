"""Jobs and their JSON records: one file per finished (or failed) job, so sweeps resume and tables are derived.

A job is a protocol and the RunConfig of one run. It is identified by what it computes — dataset,
protocol, sources, targets, method, seed and a hash of the whole config's identity (where the data
and the cache live is not part of it) — so changing any of them makes a new job rather than reusing
a stale record. Records are written atomically and strictly (promptgen.files): a sweep killed
mid-write never leaves a half record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from pathlib import Path
from typing import Callable, Iterable, Sequence

import attrs

from promptgen.runs.config import RunConfig
from promptgen.files import write_json

log = logging.getLogger(__name__)

# The harness's own exit code: its tables were made from fewer records than the suite has jobs (missing or damaged
# ones), so a cell may differ from the complete sweep's; a failed job (promptgen.cli.failures.FAILURE) wins over it.
PARTIAL = 3


@attrs.frozen
class Job:
    protocol: str  # multi-source, single-source, cross-dataset
    config: RunConfig
    trial: int | None = None  # a search's trial (benchmarks.search); None outside a search
    hparams: dict = attrs.field(factory=dict)  # the trial's drawn values, by component ({} for trial 0)
    loo_for: str | None = None  # a leave-one-domain-out run: the held-out domain(s) whose selection it serves

    @property
    def dataset(self) -> str:
        return self.config.dataset

    @property
    def sources(self) -> tuple[str, ...]:
        return self.config.sources

    @property
    def targets(self) -> tuple[str, ...]:
        return self.config.targets

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def config_hash(self) -> str:
        text = json.dumps(self.config.identity(), sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()

    @property
    def split(self) -> str:
        """The part of the id that tells the protocol's splits apart: from-<source> or to-<targets>."""
        if self.protocol == "single-source":
            return "from-" + "+".join(self.sources)
        return "to-" + "+".join(self.targets) + (f".loo-{self.loo_for}" if self.loo_for else "")

    @property
    def id(self) -> str:
        trial = "" if self.trial is None else f".trial{self.trial}"
        return f"{self.dataset}.{self.protocol}.{self.split}.{self.method}.seed{self.seed}{trial}.{self.config_hash}"

    def describe(self) -> dict:
        """What a record says of its job."""
        return {"id": self.id, "protocol": self.protocol, "dataset": self.dataset, "sources": list(self.sources),
                "targets": list(self.targets), "method": self.method, "seed": self.seed,
                "config_hash": self.config_hash, "config": self.config.identity(),
                **({} if self.trial is None else {"trial": self.trial, "hparams": self.hparams}),
                **({"loo_for": self.loo_for} if self.loo_for else {})}


class RecordStore:
    """The records of a sweep: ``<root>/records/<job id>.json``. ``suite``: the suite name written into each record,
    so that a record found among another suite's says whose it is."""

    def __init__(self, root: str | Path, suite: str | None = None):
        self.directory = Path(root) / "records"
        self.suite = suite
        self.damaged: dict[Path, str] = {}  # the record files read that could not be used, and why

    def path(self, job: Job) -> Path:
        return self.directory / f"{job.id}.json"

    def done(self, job: Job) -> bool:
        record = self._read(self.path(job), job.id)
        return record is not None and record.get("status") == "ok"

    def _read(self, path: Path, job_id: str | None = None) -> dict | None:
        """A record, or None when it is missing or damaged (the job runs again): an empty, cut-off or otherwise
        unreadable file, or, for ``job_id``'s, one that is not that job's finished or failed record."""
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            return self._damaged(path, "unreadable", f"is unreadable ({error})")
        if not isinstance(record, dict):
            return self._damaged(path, "not a JSON object")
        problem = None if job_id is None else _not_a_record_of(record, job_id)
        return self._damaged(path, problem) if problem else record

    def _damaged(self, path: Path, why: str, logged: str = "") -> None:
        """Note (and warn once) that ``path`` cannot be used: ``why`` in a word or two, ``logged`` the warning's."""
        if path not in self.damaged:
            self.damaged[path] = why
            log.warning("record %s %s; its job counts as not run", path, logged or f"is damaged ({why})")
        return None

    def write(self, job: Job, record: dict) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return write_json(self.path(job), {"job": job.describe(), **({"suite": self.suite} if self.suite else {}),
                                           **record})

    def records(self, jobs: Iterable[Job] | None = None) -> list[dict]:
        """Every readable record, or those of ``jobs`` that exist and are whole (a finished or failed record of
        that very job)."""
        if jobs is not None:
            read = [self._read(self.path(job), job.id) for job in jobs]
        else:
            read = [self._read(path) for path in self._files()]
        return [record for record in read if record is not None]

    def lacking(self, jobs: Iterable[Job], records: Iterable[dict]) -> list[str]:
        """The record files of the ``jobs`` that ``records`` (read by :meth:`records`) leave out, each with why:
        '<file> (missing)' or '<file> (<what is damaged>)'."""
        present = {record["job"]["id"] for record in records}
        return [f"{self.path(job).name} ({self.damaged.get(self.path(job), 'missing')})"
                for job in jobs if job.id not in present]

    def strangers(self, jobs: Iterable[Job]) -> list[tuple[str, str | None]]:
        """The job records in the directory that are none of ``jobs``': (file name, the suite the record names, or
        None: records written before they named their suite)."""
        known = {self.path(job).name for job in jobs}
        found = []
        for path in self._files():
            record = self._read(path) if path.name not in known else None
            if record is not None and isinstance(record.get("job"), dict):  # not stability.json, perf.json
                found.append((path.name, record.get("suite")))
        return found

    def _files(self) -> list[Path]:
        return sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []


def _not_a_record_of(record: dict, job_id: str) -> str | None:
    """What makes ``record`` no finished or failed record of job ``job_id``, or None."""
    job = record.get("job")
    if not isinstance(job, dict) or job.get("id") != job_id:
        found = job.get("id") if isinstance(job, dict) else None
        return f"the record of job {found}" if found else "no job in it"
    if record.get("status") not in ("ok", "failed"):
        return f"status {record.get('status')!r}, not 'ok' or 'failed'"
    return None


def job_seconds(record: dict) -> float:
    """A finished job's measured seconds: the whole job's (benchmarks.sweep.JobRunner), else (an older record) the
    sum of its stages (each timed alone: promptgen.runs.context.timed)."""
    return float(record.get("job_seconds") or sum(record.get("seconds", {}).values()))


def estimate(pending: Sequence[Job], records: Sequence[dict]) -> tuple[dict[str, float | None], int, list[str]]:
    """The seconds each of the ``pending`` jobs would take at the times measured in finished ``records`` (the mean
    per method, and per kind of run: a leave-one-domain-out run trains on one source fewer): ({job id: seconds, or
    None where its method has no finished job}, how many records the rates come from, the unmeasured methods)."""
    measured: dict[tuple[str, bool], list[float]] = {}
    for record in records:
        if record.get("status") == "ok" and record.get("seconds"):
            job = record["job"]
            measured.setdefault((job["method"], bool(job.get("loo_for"))), []).append(job_seconds(record))
    seconds, unmeasured = {}, []
    for job in pending:
        times = measured.get((job.method, bool(job.loo_for))) or measured.get((job.method, not job.loo_for))
        seconds[job.id] = sum(times) / len(times) if times else None
        if not times and job.method not in unmeasured:
            unmeasured.append(job.method)
    return seconds, sum(map(len, measured.values())), unmeasured


@attrs.frozen
class Attempt:
    """Run one job: its record, ok with ``fn``'s result or failed with the error (it never raises). Runs wherever
    the launcher runs the job; the record is written by :func:`run_jobs`, in the sweep's own process.

    A class rather than a closure so that process pools and Ray can pickle it.
    """

    fn: Callable[[Job], dict]

    def __call__(self, job: Job) -> dict:
        try:
            return {"status": "ok", **self.fn(job)}
        except Exception as error:  # one job's failure must not end the sweep; it is recorded instead
            return failed(error, traceback.format_exc())


def failed(error: BaseException, trace: str | None = None) -> dict:
    """The record of a job that failed with ``error``: where the job ran (``trace``), or where its launcher could
    not run it (its worker or node died)."""
    return {"status": "failed", "error": f"{type(error).__name__}: {error}",
            "traceback": trace or "".join(traceback.format_exception(error))}


def run_jobs(jobs: Iterable[Job], fn: Callable[[Job], dict], store: RecordStore, *, force: bool = False,
             launcher=None, elsewhere=None) -> list[dict]:
    """Run every job not already done (all with ``force``); a failing job records its error and the rest go on.

    Every record is written here, in this process, as its job's result arrives (the launcher's ``done``), so a sweep
    stopped halfway keeps what finished and no job needs this process's disk. ``elsewhere``: the launcher's
    workers share no disk with this process (benchmarks.remote.Elsewhere): each job runs as its ``attempt``, and
    its run directory comes back in its record and is written under --out here.
    """
    pending = [job for job in jobs if force or not store.done(job)]
    attempt = Attempt(fn) if elsewhere is None else elsewhere.attempt(fn)
    records: list[dict] = [{}] * len(pending)

    def done(index: int, result) -> None:
        job = pending[index]
        record = failed(result) if isinstance(result, BaseException) else result
        if elsewhere is not None:
            record = elsewhere.bring_home(job, record)
        store.write(job, record)
        records[index] = record

    if launcher is None:
        for index, job in enumerate(pending):
            done(index, attempt(job))
    else:
        launcher.run(attempt, pending, done=done)
    return records


LISTED = 3  # record files named in a one-line message; the rest are counted


def warn_about_strangers(store: RecordStore, jobs: list, suite: str) -> None:
    """One warning line naming the job records under records/ that are none of this run's jobs: another suite's (a
    copied or shared --out), or this suite's under other settings or flags; the tables leave them out."""
    strangers = store.strangers(jobs)
    if not strangers:
        return

    def whose(owner: str | None) -> str:
        if owner is None:
            return "no suite named: an older record, or other settings"
        return f"suite {owner!r}" + (" under other settings or flags" if owner == suite else "")

    named = ", ".join(f"{name} ({whose(owner)})" for name, owner in strangers[:LISTED])
    more = f" and {len(strangers) - LISTED} more" if len(strangers) > LISTED else ""
    log.warning("%d record(s) under %s are not jobs of this run of suite %r and are left out of its tables: %s%s",
                len(strangers), store.directory, suite, named, more)


def partial_line(lacking: list[str], jobs: int, directory: Path) -> str:
    """Why the exit code is PARTIAL, in one line: how many of ``jobs`` lack a usable record, the first few named."""
    more = f" and {len(lacking) - LISTED} more" if len(lacking) > LISTED else ""
    return (f"partial: {len(lacking)} of {jobs} jobs have no usable record under {directory}, so the tables leave "
            f"them out: {', '.join(lacking[:LISTED])}{more}; rerun the sweep to run them (exit code {PARTIAL})")
