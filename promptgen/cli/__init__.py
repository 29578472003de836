"""The ``promptgen`` command line (console script ``promptgen = promptgen.cli:main``; ``python -m promptgen``).

- promptgen.cli.parser: the parser of every command and :func:`main`;
- promptgen.cli.components, .cache, .train: the commands (``cmd_*``), one small function each;
- promptgen.cli.common: what any promptgen command line shares (python -m benchmarks.run is one too).

The settings that flags give (``--set``, ``--learner``) are read by promptgen.runs.settings, a library.
"""

from promptgen.cli.parser import main

__all__ = ["main"]
