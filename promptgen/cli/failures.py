"""How a command fails: one line for the user and the exit code, for any error that reaches a command's top level.

``promptgen`` and ``python -m benchmarks.run`` print what :func:`describe` says (promptgen.cli.common.run_command);
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno

from promptgen.cli.blame import plugin_at_fault
from promptgen.errors import (
    BackboneLoadError,
    ConfigError,
    DatasetError,
    MissingDependencyError,
    PluginError,
    PromptgenError,
    Terminated,
)

# Exit codes: bad input the user can fix in the command or its files, and failures of the run itself. (The harness
# adds one of its own: benchmarks.records.PARTIAL.)
BAD_INPUT, FAILURE, INTERRUPTED, TERMINATED = 2, 1, 130, 143  # 128 + SIGINT, 128 + SIGTERM
_BAD_INPUT_TYPES = (ConfigError, PluginError, BackboneLoadError, DatasetError, MissingDependencyError)

_OS_ERRORS = {  # errno name -> how to say it
    "ENOSPC": "no space left on the disk holding {path}: free some space, or write elsewhere (--out, --cache-dir)",
    "EDQUOT": "disk quota exceeded writing {path}: free some space, or write elsewhere (--out, --cache-dir)",
    "EACCES": "permission denied: {path}",
    "EPERM": "operation not permitted: {path}",
    "EROFS": "read-only file system: {path}: write elsewhere (--out, --cache-dir)",
    "ENOTDIR": "{path}: part of this path is a file, not a directory",
    "EISDIR": "{path} is a directory, where a file was expected",
    "EEXIST": "{path} already exists",
    "ELOOP": "{path}: too many levels of symbolic links (a symlink loop?)",
    "ENOENT": "no such file or directory: {path}",
    "ENAMETOOLONG": "file name too long: {path}",
}


def describe(error: BaseException) -> tuple[str, int]:
    """One line for the user, and the exit code, for any error that reaches a command's top level."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted; rerun the same command to resume", INTERRUPTED
    if isinstance(error, Terminated):
        return ("interrupted by SIGTERM: the unfinished run was discarded (no partial directory is left) and "
                "finished ones are kept; rerun the same command to resume"), TERMINATED
    if isinstance(error, PromptgenError):
        return str(error), BAD_INPUT if isinstance(error, _BAD_INPUT_TYPES) else FAILURE
    if isinstance(error, OSError) and error.errno is not None:
        name = errno.errorcode.get(error.errno, "")
        path = " -> ".join(str(p) for p in (error.filename, error.filename2) if p) or "(unknown path)"
        if name in _OS_ERRORS:
            return _OS_ERRORS[name].format(path=path), FAILURE
        return f"{error.strerror or error}: {path}", FAILURE
    if isinstance(error, UnicodeDecodeError):
        return f"a file is not UTF-8 text ({error.reason} at byte {error.start})", BAD_INPUT
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":  # torch's CUDA one too
        return "out of memory: use a smaller batch, fewer views or fewer classes per chunk", FAILURE
    module = type(error).__module__.split(".")[0]
    if module == "lmdb":
        return (f"the feature cache failed ({type(error).__name__}: {error}); `promptgen cache verify --repair` "
                f"keeps what is readable, `promptgen cache clear --all` starts afresh"), FAILURE
    if module == "safetensors" or type(error).__name__ == "SafetensorError":
        return f"not a readable .safetensors file ({error})", BAD_INPUT
    culprit = plugin_at_fault(error)
    if culprit:
        return (f"{culprit} raised {type(error).__name__}: {error}; this is a bug in that plugin: run again with "
                f"--debug for the traceback and report it to its authors"), FAILURE
    return (f"unexpected {type(error).__name__}: {error} (run again with --debug for the traceback, and please "
            f"report it)"), FAILURE
