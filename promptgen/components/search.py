"""Search spaces beside the options: random distributions a component declares per option, and trials drawn from them.

DomainBed's way (hparams_registry.py:19-26): each hyperparameter has a default and a random distribution; trial
``t`` of a sweep draws every distribution from a generator seeded by (sweep seed, trial, option), so the same seed
draws the same trials whatever else changes, and adding an option to one component does not move the values drawn
for another. Trial 0 is always the preset's values (nothing drawn).

A component declares a distribution in the option's annotation::

    lr: Annotated[float, option("peak learning rate", above=0, search=LogUniform(1e-4, 1e-2))] = 2e-3

A drawn value is checked against the option's declaration like a user's, so a distribution that leaves the
option's range fails the trial before any work, naming the component and the option.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any, Iterable, Sequence

import attrs


@attrs.frozen
class LogUniform:
    """10 ** uniform(log10 low, log10 high): a learning rate, a weight decay (DomainBed: ``10**r.uniform(a, b)``)."""

    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        return 10 ** rng.uniform(math.log10(self.low), math.log10(self.high))


@attrs.frozen
class Uniform:
    low: float
    high: float

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@attrs.frozen
class IntLogUniform:
    """An integer between low and high, uniform in log2 (DomainBed's batch size: ``int(2**r.uniform(3, 9))``)."""

    low: int
    high: int

    def draw(self, rng: random.Random) -> int:
        return int(round(2 ** rng.uniform(math.log2(self.low), math.log2(self.high))))


@attrs.frozen
class Choice:
    values: Sequence[Any] = attrs.field(converter=tuple)

    def draw(self, rng: random.Random) -> Any:
        return rng.choice(self.values)


def _rng(seed: int, trial: int, component: str, option: str) -> random.Random:
    """One generator per (sweep seed, trial, component, option): DomainBed's ``seed_hash`` idea."""
    text = f"{seed}/{trial}/{component}/{option}".encode()
    return random.Random(int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big"))


def search_space(registry, kind: str, name: str) -> dict[str, Any]:
    """The options of a component that declare a distribution: {option: distribution}."""
    return {option.name: option.info.search for option in registry.get(kind, name).options.values()
            if option.info.search is not None}


def draw_trial(registry, components: Iterable[tuple[str, str]], trial: int, seed: int = 0) -> dict[str, dict]:
    """The overrides of trial ``trial`` of a sweep seeded ``seed``, by component name ({} for trial 0: the preset's
    values). Each drawn value is checked against its option's declaration."""
    if not isinstance(trial, int) or isinstance(trial, bool) or trial < 0:
        raise ValueError(f"trial must be an int >= 0, got {trial!r}")
    if trial == 0:
        return {}
    overrides: dict[str, dict] = {}
    for kind, name in components:
        component = registry.get(kind, name)
        for option, distribution in search_space(registry, kind, name).items():
            value = distribution.draw(_rng(seed, trial, component.name, option))
            overrides.setdefault(component.name, {})[option] = component.options[option].check(
                value, f"{component.where}, search space of trial {trial}", registry)
    return overrides
