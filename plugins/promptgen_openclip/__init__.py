"""Built-in plugin: the ``openclip`` backbone (any open_clip_torch model)."""

from promptgen import hookimpl

from promptgen import lazy


@hookimpl
def register_backbones(register):
    register("openclip", lazy("promptgen_openclip.backbone:OpenClipBackbone"))
