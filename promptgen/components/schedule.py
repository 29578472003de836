"""The schedule block: the options every training prompt learner and generator shares, as one value.

A learner or generator that trains in epochs declares ``epochs`` and ``batch_size`` (and usually
``lr``, ``warmup_epochs``, ``weight_decay``) as options; their descriptions and ranges are declared
once (promptgen.components.options.SHARED). What the run engine, the dry run and the cost estimates
need of a component's training is its :class:`Schedule`, read with :meth:`Schedule.of` from the
options the resolver gives it, and a built component exposes the same as its ``schedule`` attribute
(the protocols' optional member; None: it trains nothing).
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs


@attrs.frozen
class Schedule:
    epochs: int
    batch_size: int
    lr: float = 0.0
    warmup_epochs: int = 0
    weight_decay: float = 0.0

    REQUIRED = ("epochs", "batch_size")

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> Schedule | None:
        """The schedule a component's options give (its declared block), or None when it declares none."""
        if not all(name in options for name in cls.REQUIRED):
            return None
        return cls(**{field.name: options[field.name] for field in attrs.fields(cls) if field.name in options})
