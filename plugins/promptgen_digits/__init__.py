"""Built-in plugin: the digits world — the `digits-dg` and `digits-c` datasets, the `tiny-clip-digits` backbone, `promptgen world`."""

from promptgen import hookimpl
from promptgen_digits.backbone import TinyClipDigits
from promptgen_digits.corrupted import DigitsC
from promptgen_digits.dataset import DigitsDG


@hookimpl
def register_datasets(register):
    register("digits-dg", DigitsDG)
    register("digits-c", DigitsC)


@hookimpl
def register_backbones(register):
    register("tiny-clip-digits", TinyClipDigits)


@hookimpl
def add_commands(commands):
    from promptgen_digits.commands import add_world_command

    add_world_command(commands)
