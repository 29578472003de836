"""OpenClipBackbone: a frozen open_clip model behind promptgen's Backbone protocol."""

from __future__ import annotations

import hashlib
from typing import Annotated, Callable, Sequence

import attrs
import torch
import torch.nn.functional as F
from torchvision import transforms as T

from promptgen.toolkit import autocast, BackboneLoadError, option, choose_device, choose_precision, Tokens
from promptgen_openclip.loading import load_model
from promptgen_openclip.prefix import encode_with_prefix
from promptgen_openclip.prefix import supported as prefix_supported

# The training augmentation's options (Dassl's, as SPG runs it), shared with tiny-clip-digits (promptgen_digits).
TRAIN_CROP_SCALE = option("(min, max) share of the image area a training image's random resized crop keeps")
TRAIN_FLIP = option("flip training images horizontally at random")


@attrs.frozen(kw_only=True)
class AugmentationOptions:
    """The training augmentation (TRAIN_CROP_SCALE, TRAIN_FLIP): every open_clip backbone's options object's base;
    tiny-clip-digits redeclares its defaults."""

    train_crop_scale: Annotated[tuple[float, float], TRAIN_CROP_SCALE] = attrs.field(default=(0.08, 1.0),
                                                                                     converter=tuple)
    train_flip: Annotated[bool, TRAIN_FLIP] = True


# Text-pooling types that read the feature at the EOT token.
_EOT_POOLING = ("argmax", "eos")


class OpenClipBackbone:
    """open_clip models: pretrained tags, local checkpoints (.safetensors, state dict, OpenAI .pt) or random weights."""

    fingerprint: str
    ctx_dim: int
    embed_dim: int
    context_length: int
    logit_scale: float
    device: torch.device

    @attrs.frozen(kw_only=True)
    class Options(AugmentationOptions):
        init_seed: Annotated[int, option("seed of the random weights when no pretrained weights are given")] = 0
        cache_dir: str | None = None

    def __init__(self, model: str | None = None, pretrained: str | None = None, device: str = "auto",
                 precision: str = "auto", options: Options = Options()):
        import open_clip

        if not model:
            raise BackboneLoadError("the openclip backbone needs a model name: --model ViT-B-16 (or any open_clip model)")
        self.model_name = model
        self.pretrained = pretrained
        self.options = options
        self.device = choose_device(device)
        self.autocast_dtype = choose_precision(precision, self.device)
        self.model = load_model(model, pretrained, cache_dir=options.cache_dir, init_seed=options.init_seed)
        self.model.to(self.device).eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model)
        self.text = _text_tower(self.model, model)
        self.ctx_dim = self.text.token_embedding.weight.shape[1]
        self.context_length = self.text.positional_embedding.shape[0]
        self.embed_dim = self._embed_dim()
        self.logit_scale = float(self.model.logit_scale.exp().item())
        # Causal attention + pooling at EOT: positions after the longest EOT cannot change any output.
        self.truncates_at_eot = self.text.attn_mask is not None and self.text.pool_type in _EOT_POOLING
        # Sharing a prompt prefix's work across classes is exact where truncation is (causal attention).
        self.shares_prefix = self.truncates_at_eot and prefix_supported(self.text)
        self._fingerprint: str | None = None
        self._image_fingerprint: str | None = None

    def _embed_dim(self) -> int:
        projection = self.text.text_projection
        if projection is None:
            return self.ctx_dim
        return projection.out_features if isinstance(projection, torch.nn.Linear) else projection.shape[1]

    @property
    def fingerprint(self) -> str:
        """Model name + a hash of every weight: two backbones share a fingerprint only if they compute the same."""
        if self._fingerprint is None:
            self._fingerprint = f"{self.model_name}@{weights_hash(self.model.state_dict())}"
        return self._fingerprint

    @property
    def image_fingerprint(self) -> str:
        """Model name + a hash of the image tower's weights: what the feature cache keys image features by."""
        if self._image_fingerprint is None:
            self._image_fingerprint = f"{self.model_name}@image-{weights_hash(self.model.visual.state_dict())}"
        return self._image_fingerprint

    # --- images -------------------------------------------------------------------------------

    def image_transform(self, train: bool) -> Callable:
        """As in SPG (Dassl): train = random resized crop (``train_crop_scale``) + flip (``train_flip``);
        eval = resize + center crop."""
        from open_clip import get_model_preprocess_cfg

        cfg = get_model_preprocess_cfg(self.model)
        size = cfg.get("size", self.model.visual.image_size)
        size = size if isinstance(size, int) else tuple(size)
        crop = size if isinstance(size, int) else size[0]
        normalize = T.Normalize(mean=cfg["mean"], std=cfg["std"])
        bicubic = T.InterpolationMode.BICUBIC
        if train:
            steps = [T.RandomResizedCrop(size, scale=self.options.train_crop_scale, interpolation=bicubic)]
            steps += [T.RandomHorizontalFlip()] if self.options.train_flip else []
        else:
            steps = [T.Resize(crop, interpolation=bicubic), T.CenterCrop(size)]
        return T.Compose([_to_rgb, *steps, T.ToTensor(), normalize])

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.autocast_dtype):
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return F.normalize(features.float(), dim=-1)

    # --- text ---------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> Tokens:
        ids = self.tokenizer(list(texts)).to(self.device)
        return Tokens(ids=ids, eot_index=self._eot_index(ids))

    def _eot_index(self, ids: torch.Tensor) -> torch.Tensor:
        eos = getattr(self.text, "eos_id", None) if self.text.pool_type == "eos" else None
        if eos is not None:
            return (ids == eos).int().argmax(dim=-1)
        return ids.argmax(dim=-1)  # CLIP's EOT has the highest id in the vocabulary

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text.token_embedding(ids.to(self.device))

    def encode_prompts(
        self, token_embeddings: torch.Tensor, eot_index: torch.Tensor, *, full_length: bool = False
    ) -> torch.Tensor:
        """Runs the text transformer over positions [0, max(eot_index)] only, when that is exact.

        full_length: pad to the context length and run every position, as CLIP itself does (the
        reference that tests and benchmarks compare the truncated path with).
        Gradients flow to ``token_embeddings`` (prompt learning needs them); the weights stay frozen.
        """
        x = token_embeddings.to(self.device)
        eot_index = eot_index.to(self.device)
        if self.truncates_at_eot and not full_length:
            length = int(eot_index.max()) + 1
            x = x[:, :length]
        else:
            x = self._pad_to_context(x)
            length = self.context_length
        text = self.text
        with autocast(self.device, self.autocast_dtype):
            x = x + text.positional_embedding[:length].to(x.dtype)
            mask = text.attn_mask[:length, :length] if text.attn_mask is not None else None
            x = text.transformer(x, attn_mask=mask)
            x = text.ln_final(x)
            x = pool_text_tokens(x, eot_index, text.pool_type)
            projection = text.text_projection
            if projection is not None:
                x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
        return F.normalize(x.float(), dim=-1)

    def encode_prompt_set(self, prefix: torch.Tensor, suffixes: torch.Tensor, eot_index: torch.Tensor) -> torch.Tensor:
        """Features [B, C, E] of every prompt prefix[b] ⊕ suffixes[c] (prefix [B, P, D], suffixes [C, S, D],
        eot_index [C] into the whole prompt): the prefix is encoded once per b and shared by all C classes
        (promptgen_openclip.prefix; exact under causal attention), else the plain path."""
        if not self.shares_prefix:
            batch, classes = prefix.shape[0], suffixes.shape[0]
            embeddings = torch.cat([prefix[:, None].expand(-1, classes, -1, -1),
                                    suffixes.to(prefix.dtype).expand(batch, -1, -1, -1)], dim=2)
            flat = self.encode_prompts(embeddings.flatten(0, 1), eot_index.repeat(batch))
            return flat.view(batch, classes, -1)
        with autocast(self.device, self.autocast_dtype):
            x = encode_with_prefix(self.text, prefix.to(self.device), suffixes.to(self.device, prefix.dtype),
                                   eot_index.to(self.device))
        return F.normalize(x.float(), dim=-1)

    def _pad_to_context(self, x: torch.Tensor) -> torch.Tensor:
        missing = self.context_length - x.shape[1]
        if missing <= 0:
            return x[:, : self.context_length]
        pad_id = getattr(self.text, "pad_id", 0) or 0
        pad = self.text.token_embedding.weight[pad_id].to(x.dtype)
        return torch.cat([x, pad.expand(x.shape[0], missing, -1)], dim=1)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Plain texts -> L2-normalised features [N, embed_dim] (zero-shot classifiers)."""
        tokens = self.tokenize(texts)
        return self.encode_prompts(self.embed_tokens(tokens.ids), tokens.eot_index)

    def __repr__(self) -> str:
        weights = self.pretrained or "random weights"
        return f"OpenClipBackbone({self.model_name!r}, {weights}, device={self.device})"


def _to_rgb(image):
    return image.convert("RGB") if hasattr(image, "convert") else image


def pool_text_tokens(x: torch.Tensor, eot_index: torch.Tensor, pool_type: str) -> torch.Tensor:
    """The text feature of each row of token states ``x`` [N, L, D]: the first, last or EOT token (open_clip's
    ``pool_type``). Public: MaPLe (promptgen_baselines) runs the text tower block by block and pools the same way."""
    if pool_type == "first":
        return x[:, 0]
    if pool_type == "last":
        return x[:, -1]
    return x[torch.arange(x.shape[0], device=x.device), eot_index]


def _text_tower(model: torch.nn.Module, name: str):
    """The module holding the text transformer: the CLIP model itself, or ``model.text`` (CustomTextCLIP)."""
    tower = getattr(model, "text", model)
    if not hasattr(tower, "transformer") or not hasattr(tower, "token_embedding"):
        raise BackboneLoadError(
            f"open_clip model '{name}' has a text tower of type {type(tower).__name__}, which promptgen cannot "
            "prompt: soft prompts need a CLIP-style text transformer (token_embedding + transformer)"
        )
    if getattr(tower, "cls_emb", None) is not None or getattr(tower, "use_pad_mask", False):
        raise BackboneLoadError(
            f"open_clip model '{name}': text towers with a class token or padding masks (CoCa-style) are not supported"
        )
    if tower is model:
        # CLIP keeps these on the model under other names; give the tower one shape.
        tower = _ClipTextView(model)
    return tower


class _ClipTextView:
    """Read-only view of the text parts of an open_clip ``CLIP`` with TextTransformer's attribute names."""

    def __init__(self, model):
        self.token_embedding = model.token_embedding
        self.transformer = model.transformer
        self.ln_final = model.ln_final
        self.text_projection = model.text_projection
        self.pool_type = model.text_pool_type
        self.eos_id = getattr(model, "text_eos_id", None)
        self._model = model

    @property
    def positional_embedding(self):
        return self._model.positional_embedding

    @property
    def attn_mask(self):
        return self._model.attn_mask  # a buffer: follows the model across devices


def weights_hash(state_dict: dict, digest_size: int = 8) -> str:
    """A short hash of every tensor's name, dtype, shape and bytes, stable across runs and machines."""
    h = hashlib.blake2b(digest_size=digest_size)
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        h.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()
