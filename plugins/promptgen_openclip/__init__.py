"""Built-in plugin: the ``openclip`` backbone (any open_clip_torch model)."""

from promptgen import hookimpl
from promptgen_openclip.backbone import OpenClipBackbone


@hookimpl
def register_backbones(register):
    register("openclip", OpenClipBackbone)
