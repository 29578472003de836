"""Presets: named sets of option values, per component and per dataset.

``gpu`` holds each component's official values (those of its paper's code, for the paper's
datasets); ``cpu`` values small enough that a digits-dg run takes minutes on 2 CPU cores. ``auto``
picks ``gpu`` on CUDA and ``cpu`` elsewhere.

A component declares its presets beside its options, as a class attribute (or attribute of its
factory) -- the same way for built-in and third-party plugins::

    presets = {
        "gpu": {"epochs": 70, "lr": 2e-4},
        "gpu/pacs": {"lr": 2e-3},   # merged over "gpu" when the run's dataset is pacs
        "cpu": {"epochs": 12, "batch_size": 128},
    }

Values a preset does not set are the option's default. ``promptgen plugins --options NAME`` shows
every option with its default and preset values; :func:`preset_table` gathers them all, like
DomainBed's hparams registry, for one place to look them up.

Run-level values are this module's own: ``views`` (augmented views cached per training image) and
``epoch`` (what one training epoch iterates: "images", each image once through one of its views, as
the official code; "views", every cached view: promptgen.toolkit.epochs).
"""

from __future__ import annotations

from typing import Any, Callable

from promptgen.components.lazy import factory_attribute
from promptgen.errors import ConfigError

PRESETS = ("cpu", "gpu")
PRESET_CHOICES = ("auto", *PRESETS)
EPOCHS = ("images", "views")
RUN_PRESETS: dict[str, dict[str, Any]] = {
    # cpu: an epoch over all 4 views gives the few epochs a CPU affords 4x the steps (docs/parity.md, row 1)
    "cpu": {"views": 4, "epoch": "views"},
    # gpu: the official code augments every image afresh each epoch; 8 cached views stand in, one per epoch
    "gpu": {"views": 8, "epoch": "images"},
}


def preset_for_device(name: str, device_type: str) -> str:
    """'auto' -> 'gpu' on CUDA, else 'cpu'; a named preset is itself."""
    if name == "auto":
        return "gpu" if device_type == "cuda" else "cpu"
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESET_CHOICES)}")
    return name


def declared_presets(factory: Callable) -> dict[str, dict]:
    """The ``presets`` mapping a component's factory declares (empty if none)."""
    presets = factory_attribute(factory, "presets") or {}
    if not isinstance(presets, dict) or not all(isinstance(v, dict) for v in presets.values()):
        raise ConfigError(f"{getattr(factory, '__qualname__', factory)}.presets must map preset names to dicts "
                          f"of option values")
    return presets


def component_preset(factory: Callable, preset: str, dataset: str | None) -> dict:
    """The option values preset ``preset`` gives ``factory`` on ``dataset`` (dataset entry over the preset's)."""
    presets = declared_presets(factory)
    values = dict(presets.get(preset, {}))
    if dataset is not None:
        values.update(presets.get(f"{preset}/{dataset}", {}))
    return values


def run_preset(preset: str) -> dict[str, Any]:
    return dict(RUN_PRESETS[preset])


def preset_table(registry) -> list[dict]:
    """One row per (component, preset entry) that some component declares: kind, name, entry, values."""
    rows = []
    for component in registry:
        for entry, values in sorted(declared_presets(component.factory).items()):
            rows.append({"kind": component.kind, "name": component.name, "preset": entry, "values": values})
    return rows
