"""Files promptgen writes: JSON written atomically and strictly, and read back with errors that name the file.

Atomic: the text goes to a temporary file beside the target, which then replaces it in one rename,
so a process killed mid-write leaves the old file or the new one, never half of either.
Strict: numbers that JSON cannot hold (NaN, infinities) are written as null, so every file parses
with strict parsers (JavaScript's, jq's), not only Python's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

from promptgen.errors import PromptgenError


def strict(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (recursively through dicts, lists, tuples)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


def dumps(value: Any, **options) -> str:
    return json.dumps(strict(value), allow_nan=False, **options)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """A file object whose contents become ``path`` (mode 0644) only when the block ends without error.

    It writes a temporary file beside ``path`` and renames it into place; on any error the temporary
    file is removed and ``path`` is left as it was. An OSError that names no file (a full disk met
    while flushing) is raised again naming ``path``, so the message says where the write failed.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as file:
            yield file
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno is not None and not error.filename:
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file + rename)."""
    with atomic_file(path) as file:
        file.write(text)
    return Path(path)


def write_json(path: str | Path, value: Any) -> Path:
    """``value`` as strict, indented JSON, written atomically."""
    return write_text(path, dumps(value, indent=2, default=str) + "\n")


def read_json_or_none(path: str | Path) -> Any:
    """The JSON in ``path``, or None when it is missing, unreadable or not JSON: for views of a run (its
    curves, a report page) that show what is there rather than fail the run."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON in ``path``; a PromptgenError naming the file when it is missing, empty or not JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptgenError(f"{what} {path} is missing") from None
    except UnicodeDecodeError:
        raise PromptgenError(f"{what} {path} is not UTF-8 text") from None
    except OSError as error:
        raise PromptgenError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if not text.strip():
        raise PromptgenError(f"{what} {path} is empty (a write was interrupted?)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise PromptgenError(f"{what} {path} is not valid JSON: {error}") from None
