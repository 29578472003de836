"""Value classes passed between components (attrs, immutable)."""

from __future__ import annotations

from typing import Any

import attrs
import torch


def _tensor_of_rank(rank: int, *, floating: bool):
    def check(instance, attribute, value):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{type(instance).__name__}.{attribute.name} must be a torch.Tensor, got {type(value).__name__}")
        if value.ndim != rank:
            raise ValueError(
                f"{type(instance).__name__}.{attribute.name} must have {rank} dimensions, got shape {tuple(value.shape)}"
            )
        if floating != value.is_floating_point():
            kind = "a floating-point" if floating else "an integer"
            raise ValueError(f"{type(instance).__name__}.{attribute.name} must be {kind} tensor, got {value.dtype}")

    return check


@attrs.frozen
class Tokens:
    """Tokenized texts: ids [N, L] (int64) and the position of each text's EOT token [N]."""

    ids: torch.Tensor = attrs.field(validator=_tensor_of_rank(2, floating=False))
    eot_index: torch.Tensor = attrs.field(validator=_tensor_of_rank(1, floating=False))


@attrs.frozen
class Sample:
    """One image of a dataset. ``key`` is stable across runs and machines (used in cache keys)."""

    key: str
    label: int
    domain: str
    source: Any = None  # what the dataset needs to load the image lazily (a path, an index, ...)


@attrs.frozen
class FeatureSet:
    """Image features with labels: features [N, D] (L2-normalised), labels [N], domain_ids [N]."""

    features: torch.Tensor = attrs.field(validator=_tensor_of_rank(2, floating=True))
    labels: torch.Tensor = attrs.field(validator=_tensor_of_rank(1, floating=False))
    domain_ids: torch.Tensor = attrs.field(validator=_tensor_of_rank(1, floating=False))

    def __attrs_post_init__(self):
        n = len(self.features)
        if len(self.labels) != n or len(self.domain_ids) != n:
            raise ValueError(
                f"FeatureSet: features, labels and domain_ids must have the same length, "
                f"got {n}, {len(self.labels)}, {len(self.domain_ids)}"
            )

    def __len__(self) -> int:
        return len(self.features)


@attrs.frozen
class PromptLabel:
    """A learned soft prompt: context vectors [n_ctx, ctx_dim] in a backbone's token-embedding space.

    ``fingerprint`` names the backbone (weights included) the context belongs to; a prompt label
    is meaningless for any other backbone.
    """

    ctx: torch.Tensor = attrs.field(validator=_tensor_of_rank(2, floating=True))
    fingerprint: str
    domain: str
    class_names: tuple[str, ...] = attrs.field(converter=tuple)
    metadata: dict = attrs.field(factory=dict)

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[0]

    @property
    def ctx_dim(self) -> int:
        return self.ctx.shape[1]
