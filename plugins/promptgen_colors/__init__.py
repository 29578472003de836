"""Built-in plugin: the ``colors`` dataset, procedural colour swatches for demos and tests."""

from promptgen import hookimpl
from promptgen_colors.dataset import ColorsDataset


@hookimpl
def register_datasets(register):
    register("colors", ColorsDataset)
