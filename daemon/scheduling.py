"""How the daemon's threads are scheduled: realtime priority, CPU pinning, the encoder team."""

from __future__ import annotations

import contextlib
import logging
import os

log = logging.getLogger("neurowire.daemon")


def set_realtime(priority: int, warn: bool = True) -> bool:
    """The calling thread SCHED_FIFO at `priority` (threads it starts inherit that)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (OSError, AttributeError) as error:
        if warn:
            log.warning("realtime_priority %d refused (%s): the data path runs at ordinary "
                        "priority (grant it with CAP_SYS_NICE or LimitRTPRIO=)", priority, error)
        return False


@contextlib.contextmanager
def scheduled(priority: int):
    """Threads started inside run SCHED_FIFO at `priority` (0: no change)."""
    if not priority or not set_realtime(priority, warn=False):  # the data thread warns
        yield
        return
    try:
        yield
    finally:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def setup_data_thread(config):
    """Schedule the calling (data) thread, then make the encoder team, which inherits that.
    Returns (team, what was granted, for `status`)."""
    from neurowire import codec

    cpus = codec.team_cpus(config.workers) if config.pin_threads else None
    if cpus is not None:
        try:
            os.sched_setaffinity(0, {cpus[0]})  # this thread's alone (Linux threads)
        except OSError as error:
            log.warning("pin_threads: CPU affinity refused (%s); threads left to the "
                        "scheduler", error)
            cpus = None
    priority = config.realtime_priority
    if priority and not set_realtime(priority):
        priority = 0
    team = codec.CodecTeam(config.workers, cpus, spin_us=config.spin_us)
    spin_us = config.spin_us if team.threads > 1 else 0
    granted = {"encoder_threads": team.threads, "cpus": cpus, "realtime_priority": priority,
               "spin_us": spin_us}
    log.info("data path: %d encoder thread(s)%s%s%s", team.threads,
             f" on CPUs {cpus}" if cpus else "",
             f", SCHED_FIFO priority {priority}" if priority else "",
             f", polling {spin_us} us between blocks" if spin_us else "")
    return team, granted
