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
    """One image of a dataset. ``key`` is stable across runs and machines (used in cache keys).

    ``version`` is the image's content identity: it changes whenever the pixels may have (a file's
    size and modification time, a generated image's recipe). It is part of every cache key, so a
    changed image is encoded again instead of being served a stale feature. It must not contain '|'.
    """

    key: str
    label: int
    domain: str
    source: Any = None  # what the dataset needs to load the image lazily (a path, an index, ...)
    version: str = ""


def _optional(check):
    def optional(instance, attribute, value):
        if value is not None:
            check(instance, attribute, value)

    return optional


@attrs.frozen
class FeatureSet:
    """Image features with labels: features [N, D] (L2-normalised), labels [N], domain_ids [N].

    image_ids [N] (optional): rows that share an id are augmented views of one image, and a training
    epoch visits each image once, through one of its views (promptgen.toolkit.epochs). None: every row is an
    image of its own.
    """

    features: torch.Tensor = attrs.field(validator=_tensor_of_rank(2, floating=True))
    labels: torch.Tensor = attrs.field(validator=_tensor_of_rank(1, floating=False))
    domain_ids: torch.Tensor = attrs.field(validator=_tensor_of_rank(1, floating=False))
    image_ids: torch.Tensor | None = attrs.field(default=None, validator=_optional(_tensor_of_rank(1, floating=False)))

    def __attrs_post_init__(self):
        n = len(self.features)
        lengths = [len(self.labels), len(self.domain_ids)]
        if self.image_ids is not None:
            lengths.append(len(self.image_ids))
        if any(length != n for length in lengths):
            raise ValueError(
                f"FeatureSet: features, labels, domain_ids (and image_ids) must have the same length, "
                f"got {n}, {', '.join(map(str, lengths))}"
            )

    def __len__(self) -> int:
        return len(self.features)

    def select(self, keep: torch.Tensor) -> FeatureSet:
        """The rows where the boolean mask ``keep`` [N] is true (or the rows an index tensor names)."""
        return FeatureSet(self.features[keep], self.labels[keep], self.domain_ids[keep],
                          None if self.image_ids is None else self.image_ids[keep])

    def of_domain(self, domain_id: int) -> FeatureSet:
        """The rows of one domain."""
        return self.select(self.domain_ids == domain_id)

    def restrict(self, class_map: torch.Tensor) -> FeatureSet:
        """Keep the rows whose label ``class_map`` maps to a class (>= 0), relabelled by it.

        class_map [C_dataset]: a dataset label -> its index among the kept classes, -1 for a class
        not kept (a cross-dataset run keeps the classes two datasets share).
        """
        labels = class_map[self.labels]
        keep = labels >= 0
        return attrs.evolve(self.select(keep), labels=labels[keep])

    def with_domains(self, table: torch.Tensor) -> FeatureSet:
        """Domain ids mapped through ``table`` (old id -> new id), e.g. dataset indices -> positions among sources."""
        return attrs.evolve(self, domain_ids=table[self.domain_ids])


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
