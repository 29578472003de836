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
