"""Built-in plugin: the digits world — the `digits-dg`, `digits-c` and `digits-traps` datasets, the `tiny-clip-digits` backbone, `promptgen world`."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_datasets(register):
    register("digits-dg", lazy("promptgen_digits.dataset:DigitsDG"))
    register("digits-c", lazy("promptgen_digits.corrupted:DigitsC"))
    register("digits-traps", lazy("promptgen_digits.traps:DigitsTraps"))


@hookimpl
def register_backbones(register):
    register("tiny-clip-digits", lazy("promptgen_digits.backbone:TinyClipDigits"))


@hookimpl
def add_commands(commands):
    from promptgen_digits.commands import add_world_command

    add_world_command(commands)
