"""The feature cache's LMDB environment: one per directory and process, opened only on a file that is safe to map.

Here is everything between a FeatureCache and the disk: sharing one environment among the caches of a
process, the page check before a file is mapped, the record of the file's state after each commit, the
read and write transactions (the map grows when full), and the errors a full or damaged disk becomes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Protocol

import lmdb

from promptgen.errors import CacheError, ConfigError
from promptgen.files import write_json
from promptgen.paths import writable_dir
from promptgen.storage import lmdbcheck


class DamagedCacheError(CacheError):
    """The cache's file is damaged where LMDB cannot be trusted to read it: repair or clear it."""

class OpenCache(Protocol):
    """What the environment's helpers and the cache's maintenance see of a FeatureCache."""

    path: Path  # the resolved features.lmdb directory
    env: lmdb.Environment
    readonly: bool


DEFAULT_MAP_SIZE = 256 * 2**20  # a start: doubled whenever a write finds the map full

# LMDB must not have one environment open twice in a process (it can corrupt the file), so every
# FeatureCache on the same directory shares one Environment, closed when the last one closes.
_OPEN: dict[Path, list] = {}  # path -> [environment, number of FeatureCache objects using it, read-only]
_OPEN_LOCK = threading.Lock()


def acquire(path: Path, map_size: int) -> tuple[Path, lmdb.Environment, bool]:
    """The resolved path, its environment (opened on first use) and whether it is read-only."""
    with _OPEN_LOCK:
        readonly = False
        try:
            writable_dir(path, "feature cache")
        except ConfigError:
            if not (path / "data.mdb").is_file() or not os.access(path / "data.mdb", os.R_OK):
                raise
            readonly = True  # a complete cache we may not write still serves its features
        path = path.resolve()
        if path not in _OPEN:
            _OPEN[path] = [open_environment(path, map_size, readonly), 0, readonly]
        _OPEN[path][1] += 1
        return path, _OPEN[path][0], _OPEN[path][2]


def release(path: Path) -> None:
    with _OPEN_LOCK:
        entry = _OPEN[path]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _OPEN[path]


@contextmanager
def closed_for_rebuild(cache: OpenCache) -> Iterator[None]:
    """Close ``cache``'s environment (its ``path`` and ``env``) while its file is rebuilt, then open it again.

    The rebuild replaces the file LMDB has mapped, so no other FeatureCache of this process may hold it.
    """
    with _OPEN_LOCK:
        if _OPEN[cache.path][1] > 1:
            raise CacheError(f"feature cache {cache.path} is open more than once in this process; close the "
                             f"others before repairing it")
        cache.env.close()
        del _OPEN[cache.path]
    try:
        yield
    finally:
        with _OPEN_LOCK:
            _OPEN[cache.path] = [open_environment(cache.path, DEFAULT_MAP_SIZE), 1, False]
            cache.env = _OPEN[cache.path][0]


@contextmanager
def unopened(path: Path) -> Iterator[None]:
    """Hold off every FeatureCache of this process while ``path``'s files are replaced or deleted; none may have
    them open already (their map would then point into a file that is gone)."""
    with _OPEN_LOCK:
        if path.resolve() in _OPEN:
            raise CacheError(f"feature cache {path} is open in this process; close it first")
        yield


def open_environment(path: Path, map_size: int, readonly: bool = False) -> lmdb.Environment:
    # lock=True: parallel jobs may share one cache, and LMDB's reader table is what keeps a writer
    # from reusing pages a reader still sees. info() and verify() read through this same
    # environment; a separate lock=False reader would be safe only while no process writes. A
    # read-only cache cannot hold a lock file: no one writes it, so reading without one is safe.
    if not _as_recorded(path):
        problem = lmdbcheck.problem(path / "data.mdb") or _emptied(path)
        if problem and not _as_recorded(path):  # (unless a writer of ours committed while it was read)
            raise DamagedCacheError(f"the feature cache at {path} is damaged: {problem}; run `promptgen cache verify "
                                    f"--repair` (keeps every intact entry) or `promptgen cache clear --all`")
    if not readonly:
        _reserve_lock_file(path)
    try:
        environment = lmdb.open(str(path), subdir=True, map_size=map_size, readahead=False, max_dbs=0,
                                lock=not readonly, readonly=readonly)
    except lmdb.Error as error:
        if _low_on_space(path):
            raise _no_space(path) from None
        damaged = (path / "data.mdb").is_file() and (path / "data.mdb").stat().st_size > 0
        raise (DamagedCacheError if damaged else CacheError)(
            f"cannot open the feature cache at {path}: {error}; run `promptgen cache verify --repair` (keeps every "
            f"intact entry) or `promptgen cache clear --all`, or choose another directory (--cache-dir)"
        ) from None
    if not readonly:
        record_state(path)
    return environment


# --- transactions ------------------------------------------------------------------------------


def begin_read(env: lmdb.Environment) -> lmdb.Transaction:
    # buffers=True: values are views into the map, valid only inside the transaction (no copies).
    try:
        return env.begin(buffers=True)
    except lmdb.MapResizedError:  # another process grew the map: adopt its size
        env.set_mapsize(0)
        return env.begin(buffers=True)


def write(env: lmdb.Environment, path: Path, fill: Callable[[lmdb.Transaction], object]):
    """Run ``fill`` in one write transaction and commit; on a full map, double the map and run it again.

    A transaction that fails leaves every earlier commit as it was (LMDB never half-commits).
    """
    while True:
        try:
            with env.begin(write=True) as txn:  # commits on success, aborts on any exception
                result = fill(txn)
            record_state(path)
            return result
        except lmdb.MapFullError:
            env.set_mapsize(env.info()["map_size"] * 2)
        except lmdb.MapResizedError:
            env.set_mapsize(0)
        except lmdb.Error as error:
            raise _write_error(path, error) from None


def scan(txn: lmdb.Transaction, prefix: bytes = b"") -> Iterator[tuple[bytes, object]]:
    """(key, value) of every entry whose key starts with ``prefix``, in key order."""
    cursor = txn.cursor()
    if not cursor.set_range(prefix):
        return
    for key, value in cursor.iternext():
        key = bytes(key)
        if not key.startswith(prefix):
            return
        yield key, value


# --- the file's state after promptgen's last commit --------------------------------------------

# The file's size and modification time after promptgen's last commit. A file found changed by anything
# else (a disk error, a copy, a stray write) is checked page by page (promptgen.storage.lmdbcheck) before it is
# mapped: LMDB trusts the sizes in its pages, and a damaged one can make it read past the end of the file,
# which kills the process with no message.
STATE = "promptgen-state.json"


def _file_state(path: Path) -> dict | None:
    try:
        stat = (path / "data.mdb").stat()
    except FileNotFoundError:
        return None
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _recorded_state(path: Path) -> dict | None:
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def _as_recorded(path: Path) -> bool:
    state = _file_state(path)
    if state is None:
        return True  # nothing to read yet
    if state["bytes"] == 0:  # a file LMDB is creating this moment, unless promptgen had committed to it
        return not (_recorded_state(path) or {}).get("bytes")
    return _recorded_state(path) == state


def _emptied(path: Path) -> str | None:
    """Why an empty data.mdb is damage: promptgen had committed features to it (LMDB never empties its file)."""
    held = (_recorded_state(path) or {}).get("bytes")
    state = _file_state(path)
    if state is not None and state["bytes"] == 0 and held:
        return (f"data.mdb is empty (0 bytes) though it held {held:,} bytes after promptgen's last commit: it was "
                f"cut or replaced, and its features are gone")
    return None


def record_state(path: Path) -> None:
    try:
        write_json(path / STATE, _file_state(path))
    except OSError:
        pass  # a read-only or full disk: the next open checks the file again, which is only slower


# --- a full disk -------------------------------------------------------------------------------

LOCK_FILE_BYTES = 8 * 2**10  # LMDB's reader table at its default 126 readers (a larger file would only hold more)


def _reserve_lock_file(path: Path) -> None:
    """Allocate lock.mdb's blocks before LMDB maps it. LMDB extends the file with ftruncate and writes it through
    the map: on a full disk that write has no block to land on, and the kernel kills the process (SIGBUS) with
    no message and the run's partial directory left behind. Allocated here, a full disk is an error we can name."""
    lock = path / "lock.mdb"
    created = not lock.exists()
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return  # LMDB opens it itself and reports what is wrong
    try:
        os.posix_fallocate(descriptor, 0, LOCK_FILE_BYTES)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            os.close(descriptor)
            descriptor = None
            if created:
                lock.unlink(missing_ok=True)
            raise _no_space(path) from None
        # a file system without fallocate: LMDB extends the file as before
    finally:
        if descriptor is not None:
            os.close(descriptor)


def _low_on_space(path: Path) -> bool:
    try:
        return shutil.disk_usage(path).free < 64 * 2**20
    except OSError:
        return False


def _no_space(path: Path) -> CacheError:
    try:
        free = f" ({shutil.disk_usage(path).free / 2**20:.1f} MiB free)"
    except OSError:
        free = ""
    return CacheError(f"no space left on the disk holding the feature cache {path}{free}: free some space or pass "
                      f"--cache-dir elsewhere; features already stored stay valid")


def _write_error(path: Path, error: lmdb.Error) -> CacheError:
    """A failed write: say 'disk full' when it is, else that the cache is damaged."""
    if _low_on_space(path):
        return _no_space(path)
    return CacheError(f"cannot write to the feature cache at {path} ({type(error).__name__}: {error}); features "
                      f"already stored stay valid: run `promptgen cache verify` to check it")
