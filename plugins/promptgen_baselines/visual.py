"""Image-side prompts: methods that change what the image encoder sees, so they train on pixels, not on the
feature cache (``inputs = "images"``).

``vp`` (Bahng et al., 2022) adds a learned pixel patch to every image; ``vpt`` (Jia et al., ECCV 2022)
inserts learned tokens into a ViT image tower's sequence. Both keep the hand-written text prompt
"a photo of a {class}." as the classifier and learn only their prompts, by cross-entropy on the
cosine logits, with the SPG baselines' schedule. They need an open_clip model underneath the
backbone (``backbone.model``): the encoder's weights stay frozen, gradients flow to the prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import attrs
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from promptgen.toolkit import (
    accuracy, ConfigError, logits, option, read_json, train_prompts, write_json,
)
from promptgen_baselines.conditional import BaselineOptions, PRESETS



@attrs.frozen(kw_only=True)
class ImagePromptOptions(BaselineOptions):
    """The options VP, VPT and MaPLe share: the SPG baselines' SGD schedule, the text prompt, the image loader."""

    ctx_init: Annotated[str, option("the hand-written phrase before the class name in the text prompt ('a photo of "
                                    "a')")] = "a photo of a"
    num_workers: Annotated[int, option("DataLoader worker processes that load the training images (0: in this "
                                       "process)", minimum=0)] = 0


class _Indexed(torch.utils.data.Dataset):
    """(pixels, row) of a SampleImages dataset: the row indexes the run's labels for the split."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index][0], index


def open_clip_model(backbone, method: str):
    model = getattr(backbone, "model", None)
    if model is None or not hasattr(model, "visual"):
        raise ConfigError(f"{method}: needs an open_clip backbone (its model's image tower); "
                          f"{type(backbone).__name__} has none")
    return model


def is_vit(backbone) -> bool:
    from open_clip.transformer import VisionTransformer

    return isinstance(getattr(getattr(backbone, "model", None), "visual", None), VisionTransformer)


def vit_model_unsupported(backbone_config) -> str | None:
    """Before any model is built: an open_clip model config whose image tower is a ViT, else the reason."""
    import open_clip

    from promptgen_openclip.loading import add_tiny_configs

    model = backbone_config.model
    if backbone_config.name != "openclip" or not model:
        return (f"needs a ViT image tower: --backbone openclip --model ViT-B-16 (or pg-tiny-vit-w64), "
                f"not {backbone_config.name}" + (f" {model}" if model else ""))
    add_tiny_configs()
    config = open_clip.get_model_config(model)
    if config is not None and not isinstance(config.get("vision_cfg", {}).get("layers"), int):
        return f"needs a ViT image tower; {model}'s is a ResNet"
    return None


class ImagePromptMethod:
    """Learn image-side prompts (``self.prompts``, a Module) against a fixed or learned text classifier."""

    inputs = "images"
    file = "visual_prompt"

    def __init__(self, options: ImagePromptOptions):
        self.options = options
        self.prompts: torch.nn.Module | None = None
        self._text = None

    def components(self):
        return ()

    # --- what subclasses say -----------------------------------------------------------------------

    def build(self, backbone, classes) -> torch.nn.Module:
        raise NotImplementedError

    def image_features(self, backbone, pixels: torch.Tensor) -> torch.Tensor:
        """L2-normalised features [B, E] of ``pixels`` seen through the prompts (with gradients to them)."""
        raise NotImplementedError

    def text_features(self, backbone, classes) -> torch.Tensor:
        """The classifier [C, E]: by default the hand-written prompt, fixed."""
        if self._text is None:
            template = self.options.ctx_init
            with torch.no_grad():
                self._text = backbone.encode_text([f"{template} {name}." for name in classes])
        return self._text

    # --- training ------------------------------------------------------------------------------------

    def _loader(self, run, split: str, train: bool, shuffle: torch.Generator | None = None):
        images = _Indexed(run.images(split, train=train))
        batch = self.options.batch_size if train else 256
        # training: each image once per epoch, freshly augmented, the last partial batch dropped (Dassl's loader,
        # data_manager.py:38-44; promptgen.toolkit.epochs does the same on cached features)
        return torch.utils.data.DataLoader(images, batch_size=batch, shuffle=shuffle is not None, generator=shuffle,
                                           num_workers=self.options.num_workers,
                                           drop_last=train and len(images) >= batch)

    def fit(self, run) -> dict:
        backbone = run.backbone
        open_clip_model(backbone, self.name)
        torch.manual_seed(run.seed)
        self.prompts = self.build(backbone, run.classes).to(backbone.device)
        labels = run.labels("train")
        loader = self._loader(run, "train", True, torch.Generator().manual_seed(run.seed))

        def loss(batch):
            pixels, rows = batch
            features = self.image_features(backbone, pixels.to(backbone.device))
            text = self.text_features(backbone, run.classes)
            return F.cross_entropy(logits(features, text, backbone.logit_scale), labels[rows].to(backbone.device))

        def score():
            return accuracy(self.logits(run, "val"), run.labels("val")) if len(run.samples("val")) else float("nan")

        with run.timed("train"):
            result = train_prompts(self.prompts, batches=lambda: loader, steps=len(loader), loss=loss, score=score,
                                   score_split=lambda split: accuracy(self.logits(run, split), run.labels(split)),
                                   **self.options.train_arguments(), progress=run.progress, desc=self.name)
        return {"best_epoch": result["best_epoch"], "best_score": result["best_score"], "history": result["history"]}

    @torch.no_grad()
    def logits(self, run, split: str) -> torch.Tensor:
        self.prompts.eval()
        backbone, out = run.backbone, []
        text = self.text_features(backbone, run.classes)
        for pixels, _ in self._loader(run, split, False):
            out.append(logits(self.image_features(backbone, pixels.to(backbone.device)), text,
                              backbone.logit_scale).cpu())
        return torch.cat(out) if out else torch.empty(0, len(run.classes))

    def save(self, directory: Path) -> None:
        save_file({k: v.contiguous().cpu() for k, v in self.prompts.state_dict().items()},
                  Path(directory) / f"{self.file}.safetensors")
        write_json(Path(directory) / f"{self.file}.json", {"method": self.name, **attrs.asdict(self.options)})

    def load(self, directory: Path, run) -> None:
        read_json(Path(directory) / f"{self.file}.json")  # present and readable: the run is whole
        self.prompts = self.build(run.backbone, run.classes)
        self.prompts.load_state_dict(load_file(Path(directory) / f"{self.file}.safetensors"))
        self.prompts.to(run.backbone.device).eval()


# --- VP ----------------------------------------------------------------------------------------------

class RandomPatch(torch.nn.Module):
    """A learned [3, size, size] patch added to the image (in normalised pixel space) at a random place per
    training batch, at a fixed place (the centre) for evaluation."""

    def __init__(self, size: int):
        super().__init__()
        self.patch = torch.nn.Parameter(torch.randn(1, 3, size, size))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        size, (height, width) = self.patch.shape[-1], pixels.shape[-2:]
        if size > min(height, width):
            raise ConfigError(f"vp: patch_size {size} is larger than the {height}x{width} images")
        if self.training:
            top, left = (int(torch.randint(0, d - size + 1, ())) for d in (height, width))
        else:
            top, left = (height - size) // 2, (width - size) // 2
        pad = (left, width - left - size, top, height - top - size)
        return pixels + F.pad(self.patch, pad).to(pixels.dtype)


class VP(ImagePromptMethod):
    """Visual prompting: a learned pixel patch (SPG's RandomPatchPrompter) in front of a frozen CLIP."""

    rank = 50
    presets = {"gpu": {**PRESETS["gpu"], "patch_size": 10}, "cpu": {**PRESETS["cpu"], "patch_size": 4}}

    name = "vp"

    @attrs.frozen(kw_only=True)
    class Options(ImagePromptOptions):
        patch_size: Annotated[int, option("side in pixels of the learned square patch (at most the image size)",
                                          minimum=1)] = 10

    def __init__(self, options: Options = Options()):
        super().__init__(options)

    def build(self, backbone, classes):
        return RandomPatch(self.options.patch_size)

    def image_features(self, backbone, pixels):
        return F.normalize(backbone.model.encode_image(self.prompts(pixels)).float(), dim=-1)


# --- VPT ---------------------------------------------------------------------------------------------

def vit_tokens(visual, pixels: torch.Tensor) -> torch.Tensor:
    """open_clip VisionTransformer's token sequence [B, 1 + patches, width] before its transformer."""
    return visual._embeds(pixels)


def vit_head(visual, x: torch.Tensor) -> torch.Tensor:
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled


def run_blocks(transformer, x: torch.Tensor, before_block=None) -> torch.Tensor:
    """The transformer's residual blocks over x [B, L, width], batch first; ``before_block(i, x) -> x``."""
    for i, block in enumerate(transformer.resblocks):
        if before_block is not None:
            x = before_block(i, x)
        x = block(x) if transformer.batch_first else block(x.transpose(0, 1)).transpose(0, 1)
    return x


class DeepTokens(torch.nn.Module):
    """``tokens`` learned tokens per layer (one layer: shallow VPT) of ``width``, normal(0, 0.02)."""

    def __init__(self, layers: int, tokens: int, width: int):
        super().__init__()
        self.tokens = torch.nn.Parameter(0.02 * torch.randn(layers, tokens, width))


class VPT(ImagePromptMethod):
    """Visual prompt tuning: learned tokens after the class token of a ViT image tower (deep: new ones per layer).

    Shallow (the SPG code's setting, ``deep = False``): the tokens join the sequence once, after the
    positional embedding and ``ln_pre``, and travel through every layer. Deep: each layer's input gets
    its own tokens in their place (Jia et al.'s VPT-deep).
    """

    rank = 60
    presets = {"gpu": {**PRESETS["gpu"], "tokens": 10, "deep": False}, "cpu": {**PRESETS["cpu"], "tokens": 4}}
    unsupported = staticmethod(vit_model_unsupported)

    name = "vpt"

    @attrs.frozen(kw_only=True)
    class Options(ImagePromptOptions):
        tokens: Annotated[int, option("learned tokens inserted after the class token (the SPG code: 10)",
                                      minimum=1)] = 10
        deep: Annotated[bool, option("new tokens in every layer (VPT-deep); False: once, before the first (the SPG "
                                     "code)")] = False

    def __init__(self, options: Options = Options()):
        super().__init__(options)

    def build(self, backbone, classes):
        if not is_vit(backbone):
            raise ConfigError(f"vpt: needs a ViT image tower; {backbone!r} has {type(backbone.model.visual).__name__}")
        visual = backbone.model.visual
        layers = len(visual.transformer.resblocks) if self.options.deep else 1
        return DeepTokens(layers, self.options.tokens, visual.transformer.width)

    def image_features(self, backbone, pixels):
        visual, prompts, n = backbone.model.visual, self.prompts.tokens, self.options.tokens
        x = vit_tokens(visual, pixels)
        x = torch.cat([x[:, :1], prompts[0].expand(len(x), -1, -1).to(x.dtype), x[:, 1:]], dim=1)

        def replace(i, x):
            if i == 0 or i >= len(prompts):
                return x
            return torch.cat([x[:, :1], prompts[i].expand(len(x), -1, -1).to(x.dtype), x[:, 1 + n:]], dim=1)

        x = run_blocks(visual.transformer, x, replace)
        return F.normalize(vit_head(visual, x).float(), dim=-1)
