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
    if os.environ.get(ENV_VAR):
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
