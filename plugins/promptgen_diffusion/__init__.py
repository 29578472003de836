"""Built-in plugin: the ``diffusion`` prompt generator (a conditional denoising diffusion model for stage II)."""

from promptgen import hookimpl
from promptgen_diffusion.generator import DiffusionGenerator


@hookimpl
def register_generators(register):
    register("diffusion", DiffusionGenerator)
