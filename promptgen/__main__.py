"""python -m promptgen: the same as the promptgen command."""

import sys

from promptgen.cli import main

sys.exit(main())
