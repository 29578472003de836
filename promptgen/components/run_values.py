"""Run values: what a run gives every component that asks, as one object.

A component asks for a run value by declaring an option of its name (``seed``, ``progress``,
``cache_dir``, ``device``); the resolver (promptgen.components.resolve) passes exactly those. They
say how a run computes and reports, not what a user tunes per component, so they are not set with
``--set`` (a component's ``seed`` given there wins, as any option: a generator seeded apart from its
run). A dataset never receives the run's seed: its ``seed`` option is its data's, so that every run
seed trains and tests on the same samples.
"""

from __future__ import annotations

from typing import Any

import attrs

from promptgen.components.options import RUN_VALUE_NAMES


@attrs.frozen
class RunValues:
    seed: int = 0
    progress: bool = False
    cache_dir: str | None = None
    device: Any = None  # torch.device of the run's backbone, once built

    def offered_to(self, kind: str) -> dict[str, Any]:
        """The run values a component of ``kind`` may receive (each only if it declares it)."""
        values = {name: getattr(self, name) for name in RUN_VALUE_NAMES}
        if kind == "dataset":
            del values["seed"]  # the data's own seed: every run seed sees the same samples
        if values["device"] is None:
            del values["device"]
        return values

    # What changes how a component reports or where it writes, never what it computes (label-store identity).
    NOT_IDENTITY = ("progress", "cache_dir")
