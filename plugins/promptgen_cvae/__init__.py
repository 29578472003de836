"""Built-in plugin: the ``cvae`` prompt generator (a conditional VAE for stage II)."""

from promptgen import hookimpl
from promptgen_cvae.generator import CVAEGenerator


@hookimpl
def register_generators(register):
    register("cvae", CVAEGenerator)
