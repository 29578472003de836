"""Prompt assembly: ``[SOS] ctx_1..ctx_n <class name tokens> . [EOT]`` as token embeddings, for all classes at once.

The class part is tokenized and embedded once; assembling a prompt is then a broadcast and a
concatenation, for one shared context (CoOp) or one context per image (SPG), with no Python
loop over images or classes.
"""

from __future__ import annotations

from typing import Sequence

import torch

from promptgen.errors import ConfigError, PromptgenError
from promptgen.components.protocols import Backbone

# A word that the CLIP BPE tokenizer maps to exactly one token; its positions are replaced by the context.
_PLACEHOLDER = "X"


class PromptAssembler:
    """Builds the token embeddings of every class prompt around a context.

    prefix [C, 1, D] (SOS), suffix [C, L - 1 - n_ctx, D] (class tokens, '.', EOT, cut after the longest EOT),
    eot_index [C].
    """

    def __init__(self, backbone: Backbone, class_names: Sequence[str], n_ctx: int):
        if n_ctx < 1:
            raise PromptgenError(f"n_ctx must be >= 1, got {n_ctx}")
        self.class_names = tuple(class_names)
        self.n_ctx = n_ctx
        placeholder = " ".join([_PLACEHOLDER] * n_ctx)
        tokens = backbone.tokenize([f"{placeholder} {name}." for name in self.class_names])
        self._check_placeholder(backbone, tokens.ids)
        self.eot_index = tokens.eot_index
        # Nothing after the longest EOT is ever read (the backbone pads again if its text encoder needs it).
        length = int(tokens.eot_index.max()) + 1
        with torch.no_grad():
            embeddings = backbone.embed_tokens(tokens.ids[:, :length])
        self.prefix = embeddings[:, :1]
        self.suffix = embeddings[:, 1 + n_ctx :]

    def _check_placeholder(self, backbone: Backbone, ids: torch.Tensor) -> None:
        placeholder_id = backbone.tokenize([_PLACEHOLDER]).ids[0, 1]
        context = ids[:, 1 : 1 + self.n_ctx]
        if context.shape[1] < self.n_ctx or not bool((context == placeholder_id).all()):
            raise PromptgenError(
                f"the tokenizer does not map the prompt placeholder to {self.n_ctx} tokens; "
                "n_ctx plus the class names may be longer than the context length"
            )

    @property
    def length(self) -> int:
        """Number of token positions of an assembled prompt (up to and including the longest EOT)."""
        return 1 + self.n_ctx + self.suffix.shape[1]

    def assemble(self, ctx: torch.Tensor, classes: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
        """ctx [n_ctx, D] -> ([C, L, D], eot [C]); ctx [B, n_ctx, D] -> ([B, C, L, D], eot [B, C]).

        classes: a slice of the classes to assemble (chunking over classes bounds memory).
        """
        if ctx.ndim not in (2, 3) or ctx.shape[-2] != self.n_ctx or ctx.shape[-1] != self.prefix.shape[-1]:
            raise PromptgenError(
                f"context must have shape [n_ctx={self.n_ctx}, {self.prefix.shape[-1]}] or "
                f"[batch, {self.n_ctx}, {self.prefix.shape[-1]}], got {tuple(ctx.shape)}"
            )
        prefix, suffix, eot = self.prefix[classes], self.suffix[classes], self.eot_index[classes]
        count = len(eot)
        ctx = ctx.to(prefix.device, prefix.dtype)
        if ctx.ndim == 2:
            return torch.cat([prefix, ctx.expand(count, -1, -1), suffix], dim=1), eot
        batch = ctx.shape[0]
        embeddings = torch.cat(
            [
                prefix.expand(batch, -1, -1, -1),
                ctx[:, None].expand(-1, count, -1, -1),
                suffix.expand(batch, -1, -1, -1),
            ],
            dim=2,
        )
        return embeddings, eot.expand(batch, -1)

    def assemble_pairs(self, ctx: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt per image: context ctx[i] [B, n_ctx, D] around class labels[i] -> ([B, L, D], eot [B])."""
        labels = labels.to(self.prefix.device)
        ctx = ctx.to(self.prefix.device, self.prefix.dtype)
        return torch.cat([self.prefix[labels], ctx, self.suffix[labels]], dim=1), self.eot_index[labels.cpu()]

    def text_features(self, backbone: Backbone, ctx: torch.Tensor, classes: slice = slice(None)) -> torch.Tensor:
        """Encoded class prompts: ctx [n_ctx, D] -> [C, E]; ctx [B, n_ctx, D] -> [B, C, E].

        A backbone with ``encode_prompt_set(prefix, suffixes, eot_index)`` encodes the class-independent
        prefix ``[SOS] ctx`` once per context and shares it across the classes (exact under causal
        attention; the openclip backbones do); others get every assembled prompt whole.
        """
        encode_set = getattr(backbone, "encode_prompt_set", None)
        if encode_set is not None and ctx.ndim in (2, 3) and ctx.shape[-2:] == (self.n_ctx, self.prefix.shape[-1]):
            batch = ctx.reshape(-1, *ctx.shape[-2:]).to(self.prefix.device, self.prefix.dtype)
            prefix = torch.cat([self.prefix[:1].expand(len(batch), -1, -1), batch], dim=1)  # SOS is every class's
            features = encode_set(prefix, self.suffix[classes], self.eot_index[classes])
            return features[0] if ctx.ndim == 2 else features
        embeddings, eot = self.assemble(ctx, classes)
        flat = backbone.encode_prompts(embeddings.reshape(-1, *embeddings.shape[-2:]), eot.reshape(-1))
        return flat.reshape(*eot.shape, -1)


def context_length(ctx_init: str | None, n_ctx: int | None, default: int, component: str) -> int:
    """How many context vectors a prompt initialised from the phrase ``ctx_init`` has: one per word (CoOp's rule).

    An ``n_ctx`` given as well must say the same (a ConfigError naming ``component`` otherwise); without a
    phrase the context is ``n_ctx`` (else ``default``) random vectors. Needs no tokenizer, so a dry run
    prints the number a run uses; :func:`phrase_embedding` checks, when the run starts, that the
    backbone's tokenizer keeps each word one token.
    """
    if not ctx_init:
        return default if n_ctx is None else n_ctx
    words = len(ctx_init.split())
    if n_ctx is not None and n_ctx != words:
        raise ConfigError(f"{component}: n_ctx={n_ctx} contradicts ctx_init {ctx_init!r}, which initialises {words} "
                          f"context vectors (one per word); leave n_ctx unset, or set {component}.ctx_init= (empty: a "
                          f"random initialisation) to learn {n_ctx}")
    return words


def phrase_embedding(backbone: Backbone, phrase: str, component: str | None = None) -> torch.Tensor:
    """The token embeddings [n, D] of a phrase (e.g. CoOp's init "a photo of a"), without SOS and EOT.

    component: the phrase is that component's ``ctx_init``: it must be one token per word (what
    :func:`context_length` counted), else a ConfigError naming it.
    """
    tokens = backbone.tokenize([phrase])
    n = int(tokens.eot_index[0]) - 1
    if n < 1:
        raise PromptgenError(f"the phrase {phrase!r} has no tokens")
    if component is not None and n != len(phrase.split()):
        raise ConfigError(f"{component}: ctx_init {phrase!r} is {n} tokens for this backbone's tokenizer, not one "
                          f"per word ({len(phrase.split())}): its n_ctx counts words, so use words the tokenizer keeps "
                          f"whole")
    with torch.no_grad():
        return backbone.embed_tokens(tokens.ids[:, 1 : 1 + n])[0].clone()
