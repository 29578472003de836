"""Built-in plugin: the ``colors`` dataset, procedural colour swatches for demos and tests."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_datasets(register):
    register("colors", lazy("promptgen_colors.dataset:ColorsDataset"))
