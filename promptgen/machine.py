"""What this machine lets a process use: the launchers split its cores between workers, the harness caps
--threads by them."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (a taskset or a container's cpuset counts), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
