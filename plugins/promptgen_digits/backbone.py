"""The `tiny-clip-digits` backbone: a small open_clip model pretrained by this project, shipped in the package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import attrs

from promptgen.toolkit import BackboneLoadError, ConfigError
from promptgen_openclip.backbone import AugmentationOptions, OpenClipBackbone, TRAIN_CROP_SCALE, TRAIN_FLIP

MODEL_NAME = "tiny-clip-digits"
CONFIG_DIR = Path(__file__).parent / "model_configs"
WEIGHTS = Path(__file__).parent / "weights" / f"{MODEL_NAME}.safetensors"
CARD = WEIGHTS.with_suffix(".json")


def add_model_config() -> None:
    """Make `tiny-clip-digits` known to open_clip (and with it, its tokenizer's context length)."""
    import open_clip

    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


class TinyClipDigits(OpenClipBackbone):
    """tiny-clip-digits: a small CLIP pretrained on the digits world; weights ship with promptgen (offline)."""

    @attrs.frozen(kw_only=True)
    class Options(AugmentationOptions):
        # A 32-px digit survives a crop of half its area, not Dassl's 8% (mostly background), and a
        # mirrored digit is another glyph: augment digits with mild crops and no flips.
        train_crop_scale: Annotated[tuple[float, float], TRAIN_CROP_SCALE] = attrs.field(default=(0.5, 1.0),
                                                                                         converter=tuple)
        train_flip: Annotated[bool, TRAIN_FLIP] = False

    def __init__(self, model=None, pretrained=None, device="auto", precision="auto", options: Options = Options()):
        if model not in (None, MODEL_NAME):
            raise ConfigError(f"backbone tiny-clip-digits has one model, {MODEL_NAME}; got --model {model}")
        weights = Path(pretrained) if pretrained else WEIGHTS
        if pretrained and not weights.is_file():
            what = ("is a directory, not a checkpoint file" if weights.is_dir() else
                    "is not a regular file (a FIFO, socket or device)" if weights.exists() else "does not exist")
            raise BackboneLoadError(f"--pretrained {weights} {what} (tiny-clip-digits weights are a .safetensors "
                                    f"file; omit --pretrained for the shipped ones)")
        if not weights.is_file():
            raise BackboneLoadError(f"the shipped tiny-clip-digits weights are missing ({weights}): reinstall "
                                    f"promptgen, or rebuild them with `promptgen world pretrain`")
        add_model_config()
        super().__init__(MODEL_NAME, pretrained=str(weights), device=device, precision=precision,
                         options=OpenClipBackbone.Options(train_crop_scale=options.train_crop_scale,
                                                          train_flip=options.train_flip))
        self.options = options
