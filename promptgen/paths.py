"""Where promptgen keeps generated data and caches: $PROMPTGEN_CACHE_DIR, else the user's cache dir."""

from __future__ import annotations

import os
from pathlib import Path

from promptgen.errors import ConfigError

ENV_VAR = "PROMPTGEN_CACHE_DIR"


def cache_root(override: str | os.PathLike | None = None) -> Path:
    """The cache root: ``override``, else $PROMPTGEN_CACHE_DIR, else $XDG_CACHE_HOME/promptgen (~/.cache/promptgen)."""
    if override is not None:
        return Path(override).expanduser()
    if ENV_VAR in os.environ:
        if not os.environ[ENV_VAR].strip():
            raise ConfigError(f"${ENV_VAR} is set but empty: unset it to use the default cache "
                              f"(~/.cache/promptgen), or set it to a directory")
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "promptgen"


def writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and make sure files can be written there; a clear error otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ConfigError(
            f"{what}: cannot write to {path} ({error.strerror or error}); "
            f"choose another directory (--cache-dir or ${ENV_VAR})"
        ) from None
    return path


def check_outside_cache(out: str | os.PathLike, cache_dir: str | os.PathLike | None, flag: str = "--out") -> None:
    """Refuse an output directory inside the feature cache's LMDB directory, whose files LMDB alone may own
    (`cache clear --all` deletes them, a stray file there confuses repair)."""
    lmdb_dir = (cache_root(cache_dir) / "features.lmdb").resolve()
    target = Path(out).expanduser().resolve()
    if target == lmdb_dir or lmdb_dir in target.parents:
        raise ConfigError(f"{flag} {out} is inside the feature cache's database directory {lmdb_dir}, which only "
                          f"LMDB may write: choose an --out elsewhere")
