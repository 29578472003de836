"""promptgen: generative soft-prompt domain generalization on CLIP-style models, as plugins."""

from promptgen.components.hookspecs import hookimpl
from promptgen.errors import PromptgenError
from promptgen.components.lazy import lazy

__version__ = "0.1.0"

__all__ = ["hookimpl", "lazy", "PromptgenError", "__version__"]
