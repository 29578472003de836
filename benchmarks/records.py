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
from typing import Callable, Iterable

import attrs

from promptgen.runs.config import RunConfig
from promptgen.files import write_json

log = logging.getLogger(__name__)


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
    """The records of a sweep: ``<root>/records/<job id>.json``."""

    def __init__(self, root: str | Path):
        self.directory = Path(root) / "records"
        self.unreadable: list[Path] = []

    def path(self, job: Job) -> Path:
        return self.directory / f"{job.id}.json"

    def done(self, job: Job) -> bool:
        record = self._read(self.path(job))
        return record is not None and record.get("status") == "ok"

    def _read(self, path: Path) -> dict | None:
        """A record, or None when it is missing or unreadable (an empty or damaged file: the job runs again)."""
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            if path not in self.unreadable:
                self.unreadable.append(path)
                log.warning("record %s is unreadable (%s); its job counts as not run", path, error)
            return None
        return record if isinstance(record, dict) else None

    def write(self, job: Job, record: dict) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return write_json(self.path(job), {"job": job.describe(), **record})

    def records(self, jobs: Iterable[Job] | None = None) -> list[dict]:
        """Every readable record, or those of ``jobs`` that exist and are readable."""
        if jobs is not None:
            paths = [self.path(job) for job in jobs]
        else:
            paths = sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []
        return [record for record in map(self._read, paths) if record is not None]


@attrs.frozen
class Attempt:
    """Run one job and write its record: ok with ``fn``'s result, or failed with the error.

    A class rather than a closure so that process pools and Ray can pickle it.
    """

    fn: Callable[[Job], dict]
    store: RecordStore

    def __call__(self, job: Job) -> dict:
        try:
            record = {"status": "ok", **self.fn(job)}
        except Exception as error:  # one job's failure must not end the sweep; it is recorded instead
            record = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                      "traceback": traceback.format_exc()}
        self.store.write(job, record)
        return record


def run_jobs(jobs: Iterable[Job], fn: Callable[[Job], dict], store: RecordStore, *, force: bool = False,
             launcher=None) -> list[dict]:
    """Run every job not already done (all with ``force``); a failing job records its error and the rest go on."""
    pending = [job for job in jobs if force or not store.done(job)]
    attempt = Attempt(fn, store)
    return launcher.run(attempt, pending) if launcher is not None else [attempt(job) for job in pending]
