"""What every promptgen command line shares (``promptgen`` and ``python -m benchmarks.run``): the argument parser
with one-line errors, logging, running a command (errors as one line and an exit code, SIGTERM as Ctrl-C) and the
arguments several commands take.

Nothing here imports torch or a plugin's module at import time: the commands must start (and --help answer)
without them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from promptgen.runs import defaults


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong and where to look, no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """Warnings (and with --verbose, progress notes) of every module, as 'promptgen: warning: ...' lines."""
    import logging

    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("promptgen: %(levelname)s: %(message)s"))
    root = logging.getLogger()  # promptgen, the harness and the plugins log under their module names
    root.handlers[:] = [handler]
    root.setLevel(level)


def warn_about_plugins() -> None:
    """Say once which plugins were left out, so that a broken one is visible without stopping the command."""
    from promptgen.components.registry import default_registry

    for error in default_registry().errors:
        print(f"promptgen: warning: {error}", file=sys.stderr)


def run_command(prog: str, function, args, *, debug: bool, flags: dict[str, str] | None = None) -> int:
    """Run a command; any error becomes one line on stderr and an exit code (2 bad input, 1 failure, 130
    interrupted, 143 terminated by SIGTERM). ``--debug`` shows the traceback instead.

    ``flags`` names config fields as this command line spells them ({"RunConfig.seed": "--seed"}): a
    :class:`~promptgen.errors.ConfigError` about one of them (its ``field``) names the flag the user typed."""
    from promptgen.cli.failures import INTERRUPTED, TERMINATED, describe
    from promptgen.errors import ConfigError, Terminated

    try:
        return function(args)
    except BrokenPipeError:  # the reader of our output went away (`promptgen plugins | head`): nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail again
        return 0
    except (Exception, KeyboardInterrupt, Terminated) as error:
        if debug:
            raise
        message, code = describe(error)
        if isinstance(error, ConfigError) and error.field in (flags or {}):
            message = error.naming(flags[error.field])
        print(f"{prog}: {'error: ' if code not in (INTERRUPTED, TERMINATED) else ''}{message}", file=sys.stderr)
        return code


@contextlib.contextmanager
def sigterm_raises():
    """While a command runs, SIGTERM (``kill PID``, a job scheduler's stop) ends it as Ctrl-C does: it raises
    :class:`~promptgen.errors.Terminated` in the main thread, so a run's partial directory is removed, finished
    runs and records stay, and run_command prints one line and exits 143. A second SIGTERM kills at once, and the
    worker processes this one started (a process pool) get it too, as a terminal's Ctrl-C reaches them all."""
    import signal
    import threading

    from promptgen.errors import Terminated

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    owner = os.getpid()

    def terminate(number, frame):
        signal.signal(number, signal.SIG_DFL)  # the next one kills, cleanup or not
        if os.getpid() != owner:  # a forked child that inherited the handler: end as SIGTERM says
            os.kill(os.getpid(), number)
            return
        if "multiprocessing" in sys.modules:
            for child in sys.modules["multiprocessing"].active_children():
                child.terminate()
        raise Terminated(number)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """-v/--verbose and --quiet on every command (one place, so a plugin's commands get them too)."""
    taken = {option for action in parser._actions for option in action.option_strings}
    if "--quiet" not in taken:
        parser.add_argument("--quiet", action="store_true", help="no progress bars; errors only")
    if "--verbose" not in taken:
        parser.add_argument("-v", "--verbose", action="store_true", help="also log progress notes (INFO)")


def add_plugin_commands(commands) -> None:
    """Commands that plugins add (e.g. `promptgen world`); one that raises is reported and left out."""
    from promptgen.errors import PluginError
    from promptgen.components.registry import default_registry

    registry = default_registry()
    for impl in registry.plugin_manager.hook.add_commands.get_hookimpls():
        try:
            impl.function(commands=commands)
        except Exception as error:  # a broken plugin must not take --help and every other command with it
            registry.errors.append(PluginError(f"plugin '{impl.plugin_name}' raised in add_commands: "
                                               f"{type(error).__name__}: {error}; its commands are left out"))


def add_log_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log", choices=("tensorboard",), default=None,
                        help="also write the per-epoch curves as TensorBoard events into <run dir>/tensorboard "
                             "(needs: pip install tensorboard); every run writes curves.png and history.json")


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """--set COMPONENT.OPTION=VALUE (repeatable), read by :func:`promptgen.runs.settings.parse_settings`."""
    parser.add_argument("--set", action="append", metavar="COMPONENT.OPTION=VALUE",
                        help="set a component's option on top of the preset, e.g. --set coop.epochs=2 "
                             "--set cgan.batch_size=64 (repeatable; `promptgen plugins --options NAME` lists them)")


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose a backbone; shared by every command that builds one (see :func:`backbone_config`)."""
    parser.add_argument(
        "--backbone", default=defaults.BACKBONE,
        help="backbone plugin (default: %(default)s, shipped with promptgen; openclip for any open_clip model)",
    )
    parser.add_argument("--model", default=None, help="model name for --backbone openclip, e.g. ViT-B-16")
    parser.add_argument(
        "--pretrained",
        default=None,
        help="pretrained tag (e.g. openai) or a local checkpoint file (.safetensors, state dict, OpenAI .pt); "
        "omit for random weights",
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N, mps")
    parser.add_argument("--precision", default="auto", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16")


def backbone_config(args: argparse.Namespace):
    """The :class:`~promptgen.runs.config.BackboneConfig` that :func:`add_backbone_arguments`' flags give."""
    from promptgen.runs.config import BackboneConfig

    return BackboneConfig(name=args.backbone, model=args.model, pretrained=args.pretrained, device=args.device,
                          precision=args.precision)
