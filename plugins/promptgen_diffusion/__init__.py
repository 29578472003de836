"""Built-in plugin: the ``diffusion`` prompt generator (a conditional denoising diffusion model for stage II)."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_generators(register):
    register("diffusion", lazy("promptgen_diffusion.generator:DiffusionGenerator"))
