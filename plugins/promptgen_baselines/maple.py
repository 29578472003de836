"""MaPLe (Khattak et al., CVPR 2023): multi-modal prompt learning, with coupled text and vision prompts in the
first ``depth`` layers of both towers.

Text: n_ctx learned vectors take the place of the first n_ctx words of "a photo of a {class}." (so
"a photo" is learned and "of a {class}." stays), and each later layer up to ``depth`` gets its own
learned vectors at those positions. Vision: each layer's text prompts, projected by a linear layer
(text width -> vision width), are appended to the ViT's token sequence (replaced layer by layer).
Trains on pixels (``inputs = "images"``): the image encoder's input changes.
"""

from __future__ import annotations

from typing import Annotated

import attrs
import torch
import torch.nn.functional as F

from promptgen.toolkit import ConfigError, option, phrase_embedding
from promptgen_baselines.conditional import PRESETS
from promptgen_baselines.visual import ImagePromptMethod, ImagePromptOptions, is_vit, run_blocks, \
    vit_head, vit_model_unsupported, vit_tokens
from promptgen_openclip.backbone import pool_text_tokens



class CoupledPrompts(torch.nn.Module):
    def __init__(self, ctx: torch.Tensor, depth: int, vision_width: int):
        super().__init__()
        n_ctx, width = ctx.shape
        self.ctx = torch.nn.Parameter(ctx.clone())
        self.deep_text = torch.nn.Parameter(0.02 * torch.randn(depth - 1, n_ctx, width))
        self.proj = torch.nn.Linear(width, vision_width)
        self.deep_proj = torch.nn.ModuleList(torch.nn.Linear(width, vision_width) for _ in range(depth - 1))

    def vision(self, layer: int) -> torch.Tensor:
        """The vision prompts [n_ctx, vision width] of ``layer`` (0: projected from the first-layer text prompts)."""
        if layer == 0:
            return self.proj(self.ctx)
        return self.deep_proj[layer - 1](self.deep_text[layer - 1])


class MaPLe(ImagePromptMethod):
    """MaPLe: learned text context and deep text prompts, coupled to vision prompts by linear projections."""

    rank = 70
    presets = {"gpu": {**PRESETS["gpu"], "n_ctx": 2, "depth": None}, "cpu": {**PRESETS["cpu"], "n_ctx": 2}}
    unsupported = staticmethod(vit_model_unsupported)
    file = "maple"

    name = "maple"

    @attrs.frozen(kw_only=True)
    class Options(ImagePromptOptions):
        n_ctx: Annotated[int, option("learned context vectors, in place of ctx_init's first words (MaPLe: 2; at most "
                                     "ctx_init's tokens)", minimum=1)] = 2
        depth: Annotated[int | None, option("layers of both towers that get prompts, from the first; None: every "
                                            "layer", minimum=1)] = None
        ctx_init: Annotated[str, option("the text prompt before the class name; its first n_ctx words' embeddings "
                                        "start the context ('a photo of a')")] = "a photo of a"

    def __init__(self, options: Options = Options()):
        super().__init__(options)
        self.n_ctx = options.n_ctx
        self._tokens = None

    def _depth(self, backbone) -> int:
        layers = min(len(backbone.model.visual.transformer.resblocks), len(backbone.text.transformer.resblocks))
        return min(self.options.depth or layers, layers)

    def build(self, backbone, classes):
        if not is_vit(backbone):
            raise ConfigError(f"maple: needs a ViT image tower; {backbone!r} has "
                              f"{type(backbone.model.visual).__name__}")
        words = phrase_embedding(backbone, self.options.ctx_init).float()
        if len(words) < self.n_ctx:
            raise ConfigError(f"maple: n_ctx {self.n_ctx} is more than the {len(words)} tokens of ctx_init "
                              f"{self.options.ctx_init!r}")
        tokens = backbone.tokenize([f"{self.options.ctx_init} {name}." for name in classes])
        self._tokens = (backbone.embed_tokens(tokens.ids).detach(), tokens.eot_index)
        return CoupledPrompts(words[:self.n_ctx], self._depth(backbone), backbone.model.visual.transformer.width)

    def text_features(self, backbone, classes):
        text, n, prompts = backbone.text, self.n_ctx, self.prompts
        embeddings, eot = self._tokens
        length = int(eot.max()) + 1  # causal attention, pooled at EOT: later positions change nothing
        x = embeddings[:, :length].to(backbone.device)
        x = torch.cat([x[:, :1], prompts.ctx[None].expand(len(x), -1, -1).to(x.dtype), x[:, 1 + n:]], dim=1)
        x = x + text.positional_embedding[:length].to(x.dtype)
        mask = text.attn_mask[:length, :length] if text.attn_mask is not None else None

        def replace(i, x):
            if i == 0 or i > len(prompts.deep_text):
                return x
            deep = prompts.deep_text[i - 1][None].expand(len(x), -1, -1).to(x.dtype)
            return torch.cat([x[:, :1], deep, x[:, 1 + n:]], dim=1)

        for i, block in enumerate(text.transformer.resblocks):
            x = replace(i, x)
            x = block(x, attn_mask=mask) if text.transformer.batch_first else \
                block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
        x = pool_text_tokens(text.ln_final(x), eot.to(x.device), text.pool_type)
        projection = text.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return F.normalize(x.float(), dim=-1)

    def image_features(self, backbone, pixels):
        visual, prompts, n = backbone.model.visual, self.prompts, self.n_ctx
        x = vit_tokens(visual, pixels)
        x = torch.cat([x, prompts.vision(0)[None].expand(len(x), -1, -1).to(x.dtype)], dim=1)

        def replace(i, x):
            if i == 0 or i > len(prompts.deep_proj):
                return x
            return torch.cat([x[:, :-n], prompts.vision(i)[None].expand(len(x), -1, -1).to(x.dtype)], dim=1)

        x = run_blocks(visual.transformer, x, replace)
        return F.normalize(vit_head(visual, x).float(), dim=-1)
