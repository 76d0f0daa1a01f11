"""How many CPUs this process may run on: the one answer the codec's teams, the daemon's
encoder threads, the capacity planner and the clients' thread defaults size themselves by.
Kept apart from the heavier modules so that every layer can import it."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which taskset, cgroups' cpusets
    and the daemon's pinning narrow), else, where there is no such mask, the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform (macOS, Windows)
        return os.cpu_count() or 1
