"""Configuration objects: attrs classes whose validators name the field at fault and the allowed values."""

from __future__ import annotations

from typing import Any, Iterable

import attrs

from promptgen.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def _where(instance: Any, attribute: attrs.Attribute) -> str:
    return f"{type(instance).__name__}.{attribute.name}"


def integer(minimum: int):
    """An int (not a bool) >= minimum."""

    def check(instance, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{_where(instance, attribute)} must be an integer >= {minimum}, got {value!r}")

    return check


def number(minimum: float, *, inclusive: bool = True):
    def check(instance, attribute, value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (value >= minimum if inclusive else value > minimum)
        if not ok:
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise ConfigError(f"{_where(instance, attribute)} must be a number {bound}, got {value!r}")

    return check


def one_of(choices: Iterable[str]):
    choices = tuple(choices)

    def check(instance, attribute, value):
        if value not in choices:
            raise ConfigError(f"{_where(instance, attribute)} must be one of {', '.join(choices)}; got {value!r}")

    return check


def registered(kind: str):
    """The value must name a component of ``kind`` registered by an installed plugin."""

    def check(instance, attribute, value):
        from promptgen.registry import get_registry

        names = get_registry().names(kind)
        if value not in names:
            raise ConfigError(
                f"{_where(instance, attribute)}: unknown {kind} {value!r}; registered: {', '.join(names) or 'none'}"
            )

    return check


def device_name(instance, attribute, value):
    ok = value in ("auto", "cpu", "cuda", "mps") or (
        isinstance(value, str) and value.startswith("cuda:") and value[5:].isdigit()
    )
    if not ok:
        raise ConfigError(f"{_where(instance, attribute)} must be one of {', '.join(DEVICES)}; got {value!r}")


@attrs.frozen
class BackboneConfig:
    """Which backbone to build: plugin name, model (e.g. an open_clip model name) and weights."""

    name: str = attrs.field(default="tiny-clip-digits", validator=registered("backbone"))
    model: str | None = None  # e.g. an open_clip model name; None where the backbone has one model
    pretrained: str | None = None  # a pretrained tag, a checkpoint file, or None for the backbone's default
    device: str = attrs.field(default="auto", validator=device_name)
    precision: str = attrs.field(default="auto", validator=one_of(PRECISIONS))
    options: dict = attrs.field(factory=dict)

    def build(self):
        from promptgen.registry import create

        return create(
            "backbone", self.name, model=self.model, pretrained=self.pretrained,
            device=self.device, precision=self.precision, **self.options,
        )


@attrs.frozen
class PromptConfig:
    """The soft prompt's shape: n_ctx context vectors, optionally initialised from a phrase."""

    n_ctx: int = attrs.field(default=4, validator=integer(1))
    ctx_init: str | None = "a photo of a"


@attrs.frozen
class TrainConfig:
    """An optimisation schedule (stage I or stage II)."""

    epochs: int = attrs.field(default=10, validator=integer(0))
    batch_size: int = attrs.field(default=32, validator=integer(1))
    lr: float = attrs.field(default=2e-3, validator=number(0.0, inclusive=False))
    warmup_epochs: int = attrs.field(default=1, validator=integer(0))
    seed: int = attrs.field(default=0, validator=integer(0))


@attrs.frozen
class GeneratorConfig:
    """Which stage II generator to train, and how."""

    name: str = attrs.field(default="cgan", validator=registered("generator"))
    train: TrainConfig = attrs.field(factory=TrainConfig)
    options: dict = attrs.field(factory=dict)


def from_dict(cls: type, data: dict) -> Any:
    """Build a config class from a plain dict (e.g. parsed TOML), naming unknown keys."""
    fields = attrs.fields_dict(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    return cls(**data)
