"""The machine's scheduling noise floor, measured in this process.

A thread asks for a 1 ms sleep over and over and records how late it wakes. On a shared
machine that lateness (often 50 us, sometimes milliseconds) is the floor under every latency
the daemon reports: a stage cannot look better than the scheduler lets a thread wake up.
Python's ``time.sleep`` releases the GIL; the wake-up is timed after the GIL is taken back,
so a long GIL hold elsewhere in the dashboard would show here too -- the dashboard keeps
its own GIL holds short (decoding runs in C with the GIL released).
"""
from __future__ import annotations

import threading
import time

from .window import LatencyWindow


class NoiseFloor(threading.Thread):
    def __init__(self, period_s: float = 0.001, window: LatencyWindow | None = None):
        super().__init__(name="noise-floor", daemon=True)
        self.period_s = period_s
        self.window = window or LatencyWindow()
        self._stop_evt = threading.Event()

    def run(self) -> None:
        period_ns = int(self.period_s * 1e9)
        while not self._stop_evt.is_set():
            t0 = time.perf_counter_ns()
            time.sleep(self.period_s)
            late_ns = time.perf_counter_ns() - t0 - period_ns
            self.window.add(max(late_ns, 0) / 1000.0)

    def stop(self) -> None:
        self._stop_evt.set()
