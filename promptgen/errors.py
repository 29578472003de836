"""Error types: every failure a user can act on is a PromptgenError with a message that says what and where."""


class PromptgenError(Exception):
    """Base class. The CLI prints the message of these without a traceback."""


class ConfigError(PromptgenError, ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


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
            f"{type(cause).__name__}: {cause}"
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
