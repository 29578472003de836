"""attrs validators whose ConfigError names the field at fault (``RunConfig.seed must be ...``): the run's config
classes and any plugin's own (from promptgen.toolkit) use them."""

from __future__ import annotations

from typing import Any

import attrs

from promptgen.errors import ConfigError


def field_name(instance: Any, attribute: attrs.Attribute) -> str:
    """The field a validator checks, as ConfigError's ``field``: "RunConfig.seed"."""
    return f"{type(instance).__name__}.{attribute.name}"


def integer(minimum: int, maximum: int | None = None):
    """An int (not a bool) >= minimum (and <= maximum)."""

    def check(instance, attribute, value):
        ok = not isinstance(value, bool) and isinstance(value, int) and value >= minimum
        if not ok or (maximum is not None and value > maximum):
            bound = f">= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            raise ConfigError(f"must be an integer {bound}, got {value!r}", field=field_name(instance, attribute))

    return check


def number(minimum: float, *, inclusive: bool = True):
    """A number (int or float, not a bool) >= minimum (> minimum when not ``inclusive``)."""

    def check(instance, attribute, value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (value >= minimum if inclusive else value > minimum)
        if not ok:
            bound = f">= {minimum}" if inclusive else f"> {minimum}"
            raise ConfigError(f"must be a number {bound}, got {value!r}", field=field_name(instance, attribute))

    return check
