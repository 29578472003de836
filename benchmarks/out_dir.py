"""A sweep's output folder (--out): checked before anything is written, made, and locked while a sweep writes.

One suite's results per folder: its tables are rewritten on every run, so a folder holding another suite's
summary is refused rather than overwritten, and two sweeps writing into one folder at once are refused too.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from benchmarks.suites import Suite
from promptgen.errors import ConfigError
from promptgen.files import read_json_or_none
from promptgen.paths import check_outside_cache

LOCK = ".lock"


def check_out(out: Path, suite: Suite, cache_dir: str | None, *, writes: bool) -> None:
    """Refuse an --out that is a file; one that will be written (``writes``: not a dry run) must also lie outside
    the feature cache and hold no other suite's results."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    if writes:
        check_outside_cache(out, cache_dir)
        check_out_is_this_suites(out, suite)


def check_out_is_this_suites(out: Path, suite: Suite) -> None:
    """Refuse an --out that holds another suite's results: its tables would be overwritten by this one's."""
    summary = read_json_or_none(out / "summary.json")
    held = summary.get("suite") if isinstance(summary, dict) else None
    if held is not None and held != suite.name:
        raise ConfigError(f"--out {out} holds the results of suite '{held}' (its summary.json); running or reporting "
                          f"suite '{suite.name}' there would overwrite its tables: pass --suite {held}, or choose "
                          f"another --out")


def make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"--out {out}: it, or a parent of it, is a file, not a directory") from None


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
