"""python -m benchmarks.run: the project's main job, its entry point. What the command does is its help text
(benchmarks.command_line.DESCRIPTION, `--help`); docs/benchmarks.md has the rest.

The rooms it calls: benchmarks.command_line (the flags and the request they make), benchmarks.orchestration
(the suite, the shard, the jobs, the lock) and benchmarks.report_text (what is written after the jobs).
"""

from __future__ import annotations

import argparse
import sys

from benchmarks import suites
from benchmarks.command_line import Request, build_parser
from benchmarks.orchestration import run_suite
from benchmarks.records import PARTIAL
from promptgen.cli.common import run_command, setup_logging, sigterm_raises, warn_about_plugins
from promptgen.cli.failures import FAILURE
from promptgen.errors import PromptgenError


def list_suites() -> None:
    for name in suites.available():
        try:
            summary = suites.load(name).description
        except PromptgenError as error:
            summary = f"(invalid: {error})"
        print(f"{name:<22} {summary}")


def exit_code(summary: dict) -> int:
    """A failed job wins over a partial table (jobs without a usable record): 1, else 3 (PARTIAL), else 0."""
    return FAILURE if summary.get("failed") else PARTIAL if summary.get("partial") else 0


def run_request(flags: argparse.Namespace) -> int:
    return exit_code(run_suite(Request.from_flags(flags)))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    if args.list:
        list_suites()
        return 0
    setup_logging(quiet=args.quiet, verbose=args.verbose)
    warn_about_plugins()
    with sigterm_raises():
        return run_command("benchmarks.run", run_request, args, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
