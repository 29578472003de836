"""Error types: every failure a user can act on is a PromptgenError with a message that says what and where."""


DISABLE_VARIABLE = "PROMPTGEN_DISABLE_PLUGINS"  # plugins to skip, by entry-point or distribution name


def suggestion(name: str, choices) -> str:
    """"; did you mean 'x'?" for the choice closest to a misspelt ``name`` (difflib), else "". Every message that
    refuses an unknown name ends with it, after the list of the names there are."""
    import difflib

    choices = [str(choice) for choice in choices]
    folded = {choice.lower(): choice for choice in choices}
    close = difflib.get_close_matches(str(name).lower(), list(folded), n=1, cutoff=0.6)
    return f"; did you mean {folded[close[0]]!r}?" if close and folded[close[0]] != name else ""


class PromptgenError(Exception):
    """Base class. The CLI prints the message of these without a traceback."""


class ConfigError(PromptgenError, ValueError):
    """A configuration value is invalid; the message names the field and the allowed values.

    An error about one field of a config class carries it: ``ConfigError("must be ...", field="RunConfig.seed")``
    reads "RunConfig.seed must be ...", and :meth:`naming` says the same with the field as a command line spells
    it ("--seed must be ...": promptgen.cli.common.run_command's ``flags``). ``field`` is None otherwise."""

    def __init__(self, message: str = "", *, field: str | None = None):
        self.field = field
        self.problem = message  # the message without the field's name
        super().__init__(f"{field} {message}" if field else message)

    def naming(self, name: str) -> str:
        """The message with the field called ``name`` (e.g. the flag that set it)."""
        return f"{name} {self.problem}" if self.field else str(self)


class PluginError(PromptgenError):
    """A plugin could not be loaded or registered a component that breaks its contract."""


class PluginLoadError(PluginError):
    """Importing the module behind an entry point raised."""

    def __init__(self, entry_point: str, distribution: str, cause: BaseException):
        self.entry_point = entry_point
        self.distribution = distribution
        self.cause = cause
        super().__init__(
            f"plugin entry point '{entry_point}' (from distribution '{distribution}') failed to import: "
            f"{type(cause).__name__}: {cause}; commands that need it fail, the others work: fix its installation "
            f"or skip it with {DISABLE_VARIABLE}={entry_point}"
        )


class DuplicateComponentError(PluginError):
    """Two plugins registered the same name for the same kind of component."""


class ProtocolError(PluginError):
    """A registered component does not satisfy the protocol of its kind."""


class UnknownComponentError(PluginError, ConfigError):
    """A component name that no plugin registered."""


class BackboneLoadError(PromptgenError):
    """A backbone's weights or configuration could not be loaded."""


class CacheError(PromptgenError):
    """The feature cache could not be opened, or holds an entry that cannot be read."""


class DatasetError(PromptgenError):
    """A dataset on disk is missing, incomplete or broken; the message names the path and what was expected."""


class GeneratorError(PromptgenError):
    """A component produced output that breaks its contract (e.g. a generator's prompts are NaN or misshapen)."""


class MethodError(PromptgenError):
    """A method's outputs cannot be trusted (non-finite logits): the run fails instead of being saved."""


class MissingDependencyError(PromptgenError, ImportError):
    """An optional package that a feature needs is not installed; the message says what to install."""


class RunDirectoryError(PromptgenError):
    """A run directory is incomplete, mixed from two runs, or cannot be written."""


class Terminated(BaseException):
    """The process received SIGTERM. Raised in the main thread (see promptgen.cli.common.sigterm_raises) so that a
    command stops as on Ctrl-C: what it was writing is discarded, what it finished stays. A BaseException,
    like KeyboardInterrupt, so that no ``except Exception`` takes it for a failure of one job."""

    def __init__(self, signal_number: int = 15):
        self.signal_number = signal_number
        super().__init__(f"signal {signal_number}")


# Exit codes: bad input the user can fix in the command or its files, and failures of the run itself.
BAD_INPUT, FAILURE, INTERRUPTED, TERMINATED = 2, 1, 130, 143  # 128 + SIGINT, 128 + SIGTERM
# The benchmark harness's tables were made from fewer records than the suite has jobs (missing or damaged
# ones), so a cell may differ from the complete sweep's; a failed job (FAILURE) wins over it.
PARTIAL = 3
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
    import errno

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
    from promptgen.components.registry import plugin_at_fault  # here: the registry imports this module

    culprit = plugin_at_fault(error)
    if culprit:
        return (f"{culprit} raised {type(error).__name__}: {error}; this is a bug in that plugin: run again with "
                f"--debug for the traceback and report it to its authors"), FAILURE
    return (f"unexpected {type(error).__name__}: {error} (run again with --debug for the traceback, and please "
            f"report it)"), FAILURE
