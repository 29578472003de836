"""Configuration: attrs classes whose validators name the field at fault and the allowed values.

:class:`RunConfig` is the one definition of a run's settings: ``promptgen train`` builds it from
its flags, a benchmark suite reads its run template into it with :func:`from_dict`, and a sweep's
jobs carry it. Building a config imports no plugin: names (dataset, method, components) are
checked against a registry when the run starts (promptgen.runs.engine.check).
"""

from __future__ import annotations

from typing import Any, Iterable

import attrs

from promptgen.runs import defaults
from promptgen.errors import ConfigError, suggestion
from promptgen.components.presets import EPOCHS, PRESET_CHOICES
from promptgen.validators import field_name, integer

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SEED_LIMIT = 2**32 - 1  # numpy and torch seeds: larger values are refused by one or the other


def one_of(choices: Iterable[str]):
    choices = tuple(choices)

    def check(instance, attribute, value):
        if value not in choices:
            raise ConfigError(f"must be one of {', '.join(choices)}; got {value!r}",
                              field=field_name(instance, attribute))

    return check


def _optional_one_of(choices: Iterable[str]):
    check = one_of(choices)

    def optional(instance, attribute, value):
        if value is not None:
            check(instance, attribute, value)

    return optional


def text(instance, attribute, value):
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"must be a non-empty string, got {value!r}", field=field_name(instance, attribute))


def optional_text(instance, attribute, value):
    if value is not None:
        text(instance, attribute, value)


def names(instance, attribute, value):
    """A non-empty tuple of non-empty strings (or None, where the field allows it)."""
    if value is None and attribute.default is None:
        return
    if not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"must be one or more non-empty names, got {value!r}", field=field_name(instance, attribute))
    twice = next((v for i, v in enumerate(value) if v in value[:i]), None)
    if twice is not None:  # a target twice is tested twice
        raise ConfigError(f"lists {twice!r} twice; name each once", field=field_name(instance, attribute))


def device_name(instance, attribute, value):
    ok = value in ("auto", "cpu", "cuda", "mps") or (
        isinstance(value, str) and value.startswith("cuda:") and value[5:].isdigit()
    )
    if not ok:
        raise ConfigError(f"must be one of {', '.join(DEVICES)}; got {value!r}", field=field_name(instance, attribute))


def _as_names(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _as_optional_names(value) -> tuple[str, ...] | None:
    return None if value is None else _as_names(value)


@attrs.frozen
class BackboneConfig:
    """Which backbone to build: plugin name, model (e.g. an open_clip model name) and weights."""

    name: str = attrs.field(default=defaults.BACKBONE, validator=text)
    model: str | None = attrs.field(default=None, validator=optional_text)  # None where the plugin has one model
    pretrained: str | None = attrs.field(default=None, validator=optional_text)  # tag, checkpoint file or None
    device: str = attrs.field(default="auto", validator=device_name)
    precision: str = attrs.field(default="auto", validator=one_of(PRECISIONS))
    options: dict = attrs.field(factory=dict)  # the backbone plugin's own options (e.g. init_seed)

    def build(self, registry=None, settings=None, run=None):
        """The backbone, from ``registry`` (default: the installed plugins), with the options the resolver gives
        it (promptgen.components.resolve): its preset's, ``options``, then a run's ``--set <name>.<option>``
        (``settings``: a run's; default: this config's options under the device's preset)."""
        from promptgen.components.presets import preset_for_device
        from promptgen.components.registry import default_registry
        from promptgen.components.resolve import Settings, build
        from promptgen.toolkit.device import choose_device

        if settings is None:
            settings = Settings(preset_for_device("auto", choose_device(self.device).type), backbone_options=self.options)
        return build(registry or default_registry(), "backbone", self.name, settings, run, model=self.model,
                     pretrained=self.pretrained, device=self.device, precision=self.precision)


def _backbone(value) -> BackboneConfig:
    return from_dict(BackboneConfig, value) if isinstance(value, dict) else value


def _overrides(instance, attribute, value):
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, dict) for k, v in value.items()):
        raise ConfigError(f"must map component names to tables of option values, e.g. "
                          f"{{'my-learner': {{'epochs': 2}}}}; got {value!r}", field=field_name(instance, attribute))


# Fields that say where or how a run reads and computes, not what it computes: they stay out of a job's identity.
WHERE = {"where": True}


@attrs.frozen(kw_only=True)
class RunConfig:
    """One DG run: train on ``sources`` (default: every domain not a target), test on each of ``targets``.

    ``overrides`` sets component options on top of the preset, by component name:
    ``{"my-learner": {"epochs": 2}, "my-generator": {"batch_size": 64}, "my-dataset": {"seed": 1}}``.
    """

    targets: tuple[str, ...] = attrs.field(converter=_as_names, validator=names)
    dataset: str = attrs.field(default=defaults.DATASET, validator=text)
    sources: tuple[str, ...] | None = attrs.field(default=None, converter=_as_optional_names, validator=names)
    target_dataset: str | None = attrs.field(default=None, validator=optional_text)  # cross-dataset targets
    method: str = attrs.field(default=defaults.METHOD, validator=text)
    seed: int = attrs.field(default=0, validator=integer(0, SEED_LIMIT))
    preset: str = attrs.field(default="auto", validator=one_of(PRESET_CHOICES))
    backbone: BackboneConfig = attrs.field(factory=BackboneConfig, converter=_backbone)
    views: int | None = attrs.field(default=None)  # augmented views per training image; None: the preset's
    epoch: str | None = attrs.field(default=None, validator=_optional_one_of(EPOCHS))  # None: the preset's
    overrides: dict = attrs.field(factory=dict, validator=_overrides)
    # record what a sweep's model selection reads: every epoch's accuracy on the held-out domains' val and test
    # splits (promptgen.toolkit.best_epoch's watch) and the final model's on their val splits; a search sets it
    checkpoints: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    data_root: str | None = attrs.field(default=None, metadata=WHERE)
    cache_dir: str | None = attrs.field(default=None, metadata=WHERE)
    num_workers: int = attrs.field(default=0, validator=integer(0), metadata=WHERE)

    @views.validator
    def _views(self, attribute, value):
        if value is not None:
            integer(1)(self, attribute, value)

    def to_dict(self) -> dict:
        """Plain JSON-able values (tuples as lists), readable back with ``from_dict(RunConfig, ...)``."""
        return attrs.asdict(self)  # tuples come out as lists

    def identity(self) -> dict:
        """What the run computes (``to_dict`` without where and how it reads): a job's id hashes this."""
        where = {field.name for field in attrs.fields(RunConfig) if field.metadata.get("where")}
        if not self.checkpoints:  # a field added later: a run without it keeps the id it always had
            where.add("checkpoints")
        return {key: value for key, value in self.to_dict().items() if key not in where}


def from_dict(cls: type, data: dict) -> Any:
    """Build a config class from a plain dict (e.g. parsed TOML or JSON), naming unknown keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}: expected a table of fields, got {data!r}")
    fields = attrs.fields_dict(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(fields)}"
                          f"{suggestion(unknown[0], fields)}")
    missing = sorted(name for name, field in fields.items()
                     if field.default is attrs.NOTHING and name not in data)
    if missing:
        raise ConfigError(f"{cls.__name__}: missing field(s) {', '.join(missing)}")
    return cls(**data)


def check_names(config: RunConfig, registry) -> None:
    """Every component ``config`` names is registered (its dataset(s), backbone, method, override sections).

    Names only, so it imports no component: a misspelling is reported before torch is loaded.
    """
    for what, kind, name in (("dataset", "dataset", config.dataset),
                             ("target dataset", "dataset", config.target_dataset),
                             ("backbone", "backbone", config.backbone.name),
                             ("method", "method", config.method)):
        if name is not None and not registry.has(kind, name):
            raise ConfigError(f"unknown {what} {name!r}; registered: {', '.join(registry.names(kind)) or 'none'}"
                              f"{registry.unknown_hint(kind, name)}")
    known = {name for component in registry for name in (component.name, *component.aliases)}
    for section in config.overrides:
        if section not in known:
            raise ConfigError(f"overrides: no component is named {section!r}; components: "
                              f"{', '.join(sorted({c.name for c in registry}))}{registry.unknown_hint(None, section)}")
